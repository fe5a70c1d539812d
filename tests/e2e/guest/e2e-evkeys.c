/* e2e-evkeys: guest tool for the keyboard check and the keyboard latency bench. Opens an evdev node,
 * prints "listening", then the key code of every EV_KEY press (value 1) until COUNT presses or
 * TIMEOUT_MS elapse: all on one line "keys A B ...", or with `each` one line "key CODE" per press,
 * flushed at once (the bench times each press from its QEMU monitor `sendkey` to that line on the
 * serial console, which it reads by whole lines).
 * usage: e2e-evkeys /dev/input/eventN COUNT TIMEOUT_MS [each]   (exit 0 iff COUNT presses were seen) */
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/input.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

int main(int argc, char **argv) {
    int each = argc == 5 && strcmp(argv[4], "each") == 0;
    if (argc != 4 && !each) {
        fprintf(stderr, "usage: %s /dev/input/eventN COUNT TIMEOUT_MS [each]\n", argv[0]);
        return 2;
    }
    int want = atoi(argv[2]);
    long deadline = now_ms() + atol(argv[3]);
    int fd = open(argv[1], O_RDONLY | O_NONBLOCK);
    if (fd < 0) {
        perror("open");
        return 1;
    }
    ioctl(fd, EVIOCGRAB, 1); /* keep the keys to ourselves; failure is harmless */
    printf("listening\n");
    fflush(stdout);
    int got = 0;
    while (got < want) {
        long left = deadline - now_ms();
        if (left <= 0)
            break;
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int r = poll(&p, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        struct input_event ev[64];
        ssize_t n = read(fd, ev, sizeof ev);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            perror("read");
            break;
        }
        for (size_t i = 0; i < (size_t)n / sizeof ev[0] && got < want; i++) {
            if (ev[i].type == EV_KEY && ev[i].value == 1) {
                if (each)
                    printf("key %u\n", ev[i].code);
                else
                    printf("%s%u", got ? " " : "keys ", ev[i].code);
                fflush(stdout);
                got++;
            }
        }
    }
    if (!each)
        printf("%s\n", got ? "" : "keys");
    return got == want ? 0 : 1;
}
