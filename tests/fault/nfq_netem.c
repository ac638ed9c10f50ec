/* nfq_netem: packet loss and delay for a kernel without sch_netem.
 *
 *   nfq_netem QUEUE LOSS_PERCENT DELAY_MS
 *
 * Takes the packets that an iptables NFQUEUE rule sends to queue QUEUE (in the network
 * namespace it runs in), drops each with probability LOSS_PERCENT/100 and holds the rest
 * DELAY_MS before accepting them, in arrival order (a constant delay keeps a FIFO
 * sorted, so no reordering is added, as netem without jitter). Runs until SIGTERM or
 * SIGINT; the rule should carry --queue-bypass so that packets pass once it is gone.
 * Prints "ready" on stdout once bound, so the caller knows the rule can be added.
 */
#define _DEFAULT_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <linux/netfilter.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* Packets held at once; past this the newest are dropped, as a full netem queue does. */
#define NETEM_HELD_MAX 65536u
#define NETEM_QUEUE_MAXLEN 20000u

struct held {
    uint32_t id;
    uint64_t due_ns;
};

static struct held g_ring[NETEM_HELD_MAX];
static uint32_t g_head, g_count;
static double g_loss;
static uint64_t g_delay_ns;
static volatile sig_atomic_t g_stop;
static unsigned long g_seen, g_dropped, g_overflow;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa,
                     void *data)
{
    (void)msg;
    (void)data;
    struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
    if (ph == NULL)
        return 0;
    uint32_t id = ntohl(ph->packet_id);
    g_seen++;
    if (drand48() < g_loss) {
        g_dropped++;
        return nfq_set_verdict(qh, id, NF_DROP, 0, NULL);
    }
    if (g_delay_ns == 0)
        return nfq_set_verdict(qh, id, NF_ACCEPT, 0, NULL);
    if (g_count == NETEM_HELD_MAX) {
        g_overflow++;
        return nfq_set_verdict(qh, id, NF_DROP, 0, NULL);
    }
    struct held *h = &g_ring[(g_head + g_count) % NETEM_HELD_MAX];
    h->id = id;
    h->due_ns = now_ns() + g_delay_ns;
    g_count++;
    return 0;
}

/* Accepts every held packet that is due; returns the ms until the next one (-1: none). */
static int release_due(struct nfq_q_handle *qh)
{
    uint64_t now = now_ns();
    while (g_count > 0) {
        struct held *h = &g_ring[g_head];
        if (h->due_ns > now)
            return (int)((h->due_ns - now + 999999u) / 1000000u);
        nfq_set_verdict(qh, h->id, NF_ACCEPT, 0, NULL);
        g_head = (g_head + 1) % NETEM_HELD_MAX;
        g_count--;
    }
    return -1;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: nfq_netem QUEUE LOSS_PERCENT DELAY_MS\n");
        return 2;
    }
    char *end;
    unsigned long queue = strtoul(argv[1], &end, 10);
    if (*end || queue > 65535) {
        fprintf(stderr, "nfq_netem: bad queue number %s\n", argv[1]);
        return 2;
    }
    double loss = strtod(argv[2], &end);
    if (*end || loss < 0 || loss > 100) {
        fprintf(stderr, "nfq_netem: loss must be 0 to 100, got %s\n", argv[2]);
        return 2;
    }
    unsigned long delay = strtoul(argv[3], &end, 10);
    if (*end || delay > 60000) {
        fprintf(stderr, "nfq_netem: delay must be 0 to 60000 ms, got %s\n", argv[3]);
        return 2;
    }
    g_loss = loss / 100.0;
    g_delay_ns = (uint64_t)delay * 1000000u;
    srand48((long)now_ns());

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    struct nfq_handle *h = nfq_open();
    if (h == NULL) {
        perror("nfq_netem: nfq_open");
        return 1;
    }
    struct nfq_q_handle *qh = nfq_create_queue(h, (uint16_t)queue, on_packet, NULL);
    if (qh == NULL) {
        perror("nfq_netem: nfq_create_queue");
        nfq_close(h);
        return 1;
    }
    /* Only the verdict is needed, never the payload. */
    if (nfq_set_mode(qh, NFQNL_COPY_META, 0) < 0 ||
        nfq_set_queue_maxlen(qh, NETEM_QUEUE_MAXLEN) < 0) {
        perror("nfq_netem: queue setup");
        nfq_destroy_queue(qh);
        nfq_close(h);
        return 1;
    }
    int fd = nfq_fd(h);
    /* A burst must not overflow the netlink socket (ENOBUFS loses packets silently). */
    int rcvbuf = 8 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);
    printf("ready\n");
    fflush(stdout);

    char buf[65536] __attribute__((aligned));
    while (!g_stop) {
        int wait = release_due(qh);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int n = poll(&p, 1, wait < 0 ? 200 : wait);
        if (n < 0 && errno != EINTR)
            break;
        if (n > 0) {
            for (;;) {
                ssize_t got = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
                if (got < 0) {
                    if (errno == ENOBUFS) {
                        g_overflow++;
                        continue;
                    }
                    break;
                }
                nfq_handle_packet(h, buf, (int)got);
            }
        }
    }
    /* Let the held packets go rather than leave them to the queue's teardown. */
    while (g_count > 0) {
        nfq_set_verdict(qh, g_ring[g_head].id, NF_ACCEPT, 0, NULL);
        g_head = (g_head + 1) % NETEM_HELD_MAX;
        g_count--;
    }
    fprintf(stderr,
            "nfq_netem: queue %lu: %lu packets, %lu dropped by loss, %lu overflow\n",
            queue, g_seen, g_dropped, g_overflow);
    nfq_destroy_queue(qh);
    nfq_close(h);
    return 0;
}
