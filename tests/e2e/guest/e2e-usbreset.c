/* e2e-usbreset: resets a USB device through usbfs (USBDEVFS_RESET), as `usbreset` does. On an
 * imported device the client re-enumerates it over USB/IP (descriptors, SET_CONFIGURATION) and
 * its drivers carry on (usb-storage has pre/post reset hooks).
 * usage: e2e-usbreset /dev/bus/usb/BBB/DDD      (exit 0 iff the reset succeeded) */
#include <errno.h>
#include <fcntl.h>
#include <linux/usbdevice_fs.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s /dev/bus/usb/BBB/DDD\n", argv[0]);
        return 2;
    }
    int fd = open(argv[1], O_WRONLY);
    if (fd < 0) {
        printf("error open %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    if (ioctl(fd, USBDEVFS_RESET, 0) < 0) {
        printf("error reset: %s\n", strerror(errno));
        return 1;
    }
    printf("reset ok\n");
    return 0;
}
