/* See link.h. */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "link.h"
#include "tern/addr.h"
#include "tern/error.h"

/* Not in every libc's headers yet (Linux 6.15, include/uapi/linux/tcp.h). */
#ifndef TCP_RTO_MAX_MS
#define TCP_RTO_MAX_MS 44
#endif
#ifndef TCP_RTO_MIN_US
#define TCP_RTO_MIN_US 45
#endif
#ifndef TCP_DELACK_MAX_US
#define TCP_DELACK_MAX_US 46
#endif

void tern_link_tune(uv_tcp_t *tcp)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)tcp, &fd) != 0)
        return;
    int one = 1;
    int idle = TERN_LINK_KEEPIDLE_S, intvl = TERN_LINK_KEEPINTVL_S;
    int cnt = TERN_LINK_KEEPCNT;
    unsigned timeout = TERN_LINK_USER_TIMEOUT_MS;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &timeout, sizeof(timeout));
    setsockopt(fd, IPPROTO_TCP, TCP_THIN_LINEAR_TIMEOUTS, &one, sizeof(one));
    int rto_min = TERN_LINK_RTO_MIN_US, rto_max = TERN_LINK_RTO_MAX_MS;
    int delack = TERN_LINK_DELACK_MAX_US;
    setsockopt(fd, IPPROTO_TCP, TCP_RTO_MIN_US, &rto_min, sizeof(rto_min));
    setsockopt(fd, IPPROTO_TCP, TCP_RTO_MAX_MS, &rto_max, sizeof(rto_max));
    setsockopt(fd, IPPROTO_TCP, TCP_DELACK_MAX_US, &delack, sizeof(delack));
}

int tern_link_ipv4(const char *addr, struct sockaddr_in *sa)
{
    char host[64];
    uint16_t port;
    if (!addr || tern_addr_split(addr, host, sizeof(host), &port) != TERN_OK ||
        port == 0 || uv_ip4_addr(host, port, sa) != 0)
        return TERN_EINVAL;
    return TERN_OK;
}
