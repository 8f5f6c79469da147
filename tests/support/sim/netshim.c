/* The simulated pod network's source addresses: loaded (LD_PRELOAD) into every
 * container process the simulated kubelet runs, it binds a TCP/UDP socket that
 * connects to a loopback address to the pod's own address first (from
 * PGPLAN_SIM_POD_IP), so a server sees a pod's connection come from that pod's
 * address, as on a pod network, and not from 127.0.0.1. Nothing else changes. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real)(int, const struct sockaddr *, socklen_t);
    if (!real) {
        real = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");
    }
    const char *ip = getenv("PGPLAN_SIM_POD_IP");
    if (ip && addr && addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *to = (const struct sockaddr_in *)addr;
        if ((ntohl(to->sin_addr.s_addr) >> 24) == 127) {
            struct sockaddr_in me;
            socklen_t ml = sizeof me;
            memset(&me, 0, sizeof me);
            if (getsockname(fd, (struct sockaddr *)&me, &ml) == 0 && me.sin_family == AF_INET &&
                me.sin_port == 0 && me.sin_addr.s_addr == 0) {
                struct sockaddr_in from;
                memset(&from, 0, sizeof from);
                from.sin_family = AF_INET;
                if (inet_pton(AF_INET, ip, &from.sin_addr) == 1) {
                    (void)bind(fd, (struct sockaddr *)&from, sizeof from);
                }
            }
        }
    }
    return real(fd, addr, len);
}
