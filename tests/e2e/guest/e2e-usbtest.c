/* e2e-usbtest: guest tool for the loopback check. Runs one test case of the kernel's usbtest driver
 * (bound to a gadget-zero compatible device) through usbfs USBDEVFS_IOCTL and prints a check line.
 * usage: e2e-usbtest /dev/bus/usb/BBB/DDD IFNO CASE ITERATIONS LENGTH VARY SGLEN */
#include <errno.h>
#include <fcntl.h>
#include <linux/usbdevice_fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* The user ABI of drivers/usb/misc/usbtest.c (struct usbtest_param_64, 64-bit durations). */
struct usbtest_param64 {
    uint32_t test_num, iterations, length, vary, sglen; /* inputs */
    int64_t duration_sec, duration_usec;                /* outputs */
};
#define USBTEST_REQUEST64 _IOWR('U', 100, struct usbtest_param64)

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s NODE IFNO CASE ITERATIONS LENGTH VARY SGLEN\n", argv[0]);
        return 2;
    }
    struct usbtest_param64 p = {
        .test_num = atoi(argv[3]), .iterations = atoi(argv[4]), .length = atoi(argv[5]),
        .vary = atoi(argv[6]), .sglen = atoi(argv[7]),
    };
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) {
        printf("E2E CHECK usbtest-%u FAIL open %s: %s\n", p.test_num, argv[1], strerror(errno));
        return 1;
    }
    struct usbdevfs_ioctl w = { .ifno = atoi(argv[2]), .ioctl_code = USBTEST_REQUEST64, .data = &p };
    int r = ioctl(fd, USBDEVFS_IOCTL, &w);
    if (r < 0) {
        int e = errno;
        printf("E2E CHECK usbtest-%u FAIL errno %d (%s) iterations=%u length=%u\n", p.test_num, e,
               strerror(e), p.iterations, p.length);
        return 1;
    }
    printf("E2E CHECK usbtest-%u PASS %lld.%06llds iterations=%u length=%u\n", p.test_num,
           (long long)p.duration_sec, (long long)p.duration_usec, p.iterations, p.length);
    return 0;
}
