/* e2e-usbfs: guest tool for the loopback device in its loopback configuration, through usbfs.
 * 1) bulk IN with nothing queued and a 500 ms timeout: the kernel gives up and vhci-hcd sends
 *    CMD_UNLINK; 2) bulk OUT then IN must echo; 3) control GET_DESCRIPTOR(device) must work.
 * usage: e2e-usbfs /dev/bus/usb/BBB/DDD      (prints E2E CHECK lines, exit 0 iff all passed) */
#include <errno.h>
#include <fcntl.h>
#include <linux/usbdevice_fs.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int failed;

static void check(const char *name, int ok, const char *why) {
    printf("E2E CHECK %s %s%s%s\n", name, ok ? "PASS" : "FAIL", ok ? "" : " ", ok ? "" : why);
    failed |= !ok;
}

int main(int argc, char **argv) {
    char why[256];
    if (argc != 2) {
        fprintf(stderr, "usage: %s /dev/bus/usb/BBB/DDD\n", argv[0]);
        return 2;
    }
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) {
        snprintf(why, sizeof why, "open %s: %s", argv[1], strerror(errno));
        check("loopback-usbfs-claim", 0, why);
        return 1;
    }
    struct usbdevfs_disconnect_claim dc = { .interface = 0,
                                            .flags = USBDEVFS_DISCONNECT_CLAIM_EXCEPT_DRIVER };
    strcpy(dc.driver, "usbfs");
    if (ioctl(fd, USBDEVFS_DISCONNECT_CLAIM, &dc) < 0) {
        snprintf(why, sizeof why, "disconnect-claim interface 0: %s", strerror(errno));
        check("loopback-usbfs-claim", 0, why);
        return 1;
    }

    unsigned char buf[512];
    struct usbdevfs_bulktransfer in0 = { .ep = 0x81, .len = sizeof buf, .timeout = 500, .data = buf };
    int r = ioctl(fd, USBDEVFS_BULK, &in0);
    int e = errno;
    snprintf(why, sizeof why, "bulk IN on an empty loopback returned %d (%s), want ETIMEDOUT", r,
             r < 0 ? strerror(e) : "data");
    check("loopback-unlink-timeout", r < 0 && e == ETIMEDOUT, why);

    const char msg[] = "usbipd-e2e loopback echo 0123456789";
    struct usbdevfs_bulktransfer out = { .ep = 0x01, .len = sizeof msg - 1, .timeout = 5000,
                                         .data = (void *)msg };
    int w = ioctl(fd, USBDEVFS_BULK, &out);
    e = errno;
    memset(buf, 0, sizeof buf);
    struct usbdevfs_bulktransfer in = { .ep = 0x81, .len = sizeof buf, .timeout = 5000, .data = buf };
    r = w < 0 ? -1 : ioctl(fd, USBDEVFS_BULK, &in);
    if (w >= 0)
        e = errno;
    snprintf(why, sizeof why, "bulk OUT returned %d, bulk IN returned %d (%s) data '%.*s'", w, r,
             r < 0 ? strerror(e) : "ok", r > 0 ? r : 0, buf);
    check("loopback-echo-after-unlink",
          w == (int)sizeof msg - 1 && r == (int)sizeof msg - 1 && !memcmp(buf, msg, sizeof msg - 1), why);

    struct usbdevfs_ctrltransfer c = { .bRequestType = 0x80, .bRequest = 6, .wValue = 0x0100,
                                       .wIndex = 0, .wLength = 18, .timeout = 5000, .data = buf };
    r = ioctl(fd, USBDEVFS_CONTROL, &c);
    e = errno;
    snprintf(why, sizeof why, "GET_DESCRIPTOR(device) returned %d (%s) vid %02x%02x", r,
             r < 0 ? strerror(e) : "ok", buf[9], buf[8]);
    check("loopback-control-after-unlink", r == 18 && buf[1] == 1 && buf[8] == 0x25 && buf[9] == 0x05,
          why);
    unsigned int ifc = 0;
    ioctl(fd, USBDEVFS_RELEASEINTERFACE, &ifc);
    close(fd);
    return failed;
}
