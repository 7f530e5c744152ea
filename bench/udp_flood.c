/* UDP at full speed for bench/device_bench.py: one process per sending device, run in the
 * device's network namespace (ip netns exec NS udp_flood ...). Compiled by the benchmark with
 * the system's cc into a temporary directory.
 *
 *   udp_flood send DST_IP PORT   one connected UDP socket; commands on stdin, one JSON line back:
 *        n COUNT   exactly COUNT datagrams accepted by the kernel (sendmmsg, batches of 64)
 *        t MSEC    as many as fit in MSEC milliseconds
 *      reply {"sent": N, "calls": sendmmsg calls, "errors": failed calls, "t0": s, "t1": s}
 *      (CLOCK_MONOTONIC, the clock of Python's time.monotonic). "sent" counts only datagrams
 *      sendmmsg reported as sent: what the device put on the wire.
 *   udp_flood sink PORT          binds PORT on 0.0.0.0 and never reads (the kernel drops what
 *                                overflows the receive buffer); prints "ready", exits on stdin EOF.
 *
 * Both die with the benchmark (PR_SET_PDEATHSIG). Datagrams carry 18 bytes of payload: 60-byte
 * Ethernet frames, the highest packet rate. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define PAYLOAD 18

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int sink(int port)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        perror("udp_flood sink");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    char buf[64];
    while (fgets(buf, sizeof(buf), stdin))
        ;
    return 0;
}

static int send_loop(const char *dst, int port)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (fd < 0 || inet_pton(AF_INET, dst, &a.sin_addr) != 1 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        perror("udp_flood send");
        return 1;
    }
    static char payload[PAYLOAD] = "netwatchd-bench!!";
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof(msgs));
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = payload;
        iov[i].iov_len = PAYLOAD;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    printf("{\"pid\": %d}\n", getpid());
    fflush(stdout);

    char line[128];
    while (fgets(line, sizeof(line), stdin)) {
        char mode = 0;
        long long arg = 0;
        if (sscanf(line, "%c %lld", &mode, &arg) != 2 || (mode != 'n' && mode != 't'))
            break;
        long long sent = 0, calls = 0, errors = 0;
        double t0 = now(), deadline = t0 + arg / 1000.0;
        for (;;) {
            unsigned int vlen = BATCH;
            if (mode == 'n') {
                if (sent >= arg)
                    break;
                if (arg - sent < BATCH)
                    vlen = (unsigned int)(arg - sent);
            } else if ((calls & 15) == 0 && now() >= deadline) {
                break;
            }
            int r = sendmmsg(fd, msgs, vlen, 0);
            calls++;
            if (r > 0)
                sent += r;
            else
                errors++; /* ENOBUFS and the like: nothing of this batch was sent */
        }
        double t1 = now();
        printf("{\"sent\": %lld, \"calls\": %lld, \"errors\": %lld, \"t0\": %.6f, \"t1\": %.6f}\n", sent, calls, errors,
               t0, t1);
        fflush(stdout);
    }
    return 0;
}

int main(int argc, char **argv)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1)
        return 1;
    if (argc == 4 && strcmp(argv[1], "send") == 0)
        return send_loop(argv[2], atoi(argv[3]));
    if (argc == 3 && strcmp(argv[1], "sink") == 0)
        return sink(atoi(argv[2]));
    fprintf(stderr, "usage: udp_flood send DST_IP PORT | udp_flood sink PORT\n");
    return 2;
}
