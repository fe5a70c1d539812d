/* e2e-hidread: reads one report from an (imported) keyboard's interrupt IN endpoint through
 * usbfs, taking interface 0 from usbhid first. A read that times out makes the kernel unlink the
 * URB (vhci-hcd sends CMD_UNLINK), so two calls prove that unlink, then that the endpoint still
 * delivers. Prints "listening" before it waits, then "timeout" (exit 3) or "report xx xx ..." (exit 0).
 * usage: e2e-hidread /dev/bus/usb/BBB/DDD ENDPOINT TIMEOUT_MS */
#include <errno.h>
#include <fcntl.h>
#include <linux/usbdevice_fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s /dev/bus/usb/BBB/DDD ENDPOINT TIMEOUT_MS\n", argv[0]);
        return 2;
    }
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) {
        printf("error open %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    struct usbdevfs_disconnect_claim dc = { .interface = 0,
                                            .flags = USBDEVFS_DISCONNECT_CLAIM_EXCEPT_DRIVER };
    strcpy(dc.driver, "usbfs");
    if (ioctl(fd, USBDEVFS_DISCONNECT_CLAIM, &dc) < 0) {
        printf("error disconnect-claim interface 0: %s\n", strerror(errno));
        return 1;
    }
    unsigned char buf[64];
    struct usbdevfs_bulktransfer bt = { .ep = (unsigned)strtoul(argv[2], NULL, 0), .len = 8,
                                        .timeout = (unsigned)atoi(argv[3]), .data = buf };
    printf("listening\n");
    fflush(stdout);
    int n = ioctl(fd, USBDEVFS_BULK, &bt);
    if (n < 0 && errno == ETIMEDOUT) {
        printf("timeout\n");
        return 3;
    }
    if (n < 0) {
        printf("error read: %s\n", strerror(errno));
        return 1;
    }
    printf("report");
    for (int i = 0; i < n; i++) printf(" %02x", buf[i]);
    printf("\n");
    return 0;
}
