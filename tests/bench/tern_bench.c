/* tern-bench: an MQTT load generator on libuv, using tern's own codec.
 *
 * One thread, one loop, many connections. Publishers put a 16-byte header at
 * the start of each payload (u64 send time in ns, u32 publisher id, u32
 * sequence, little endian) so subscribers can measure latency, count loss
 * against the expected fan-out and spot duplicates without any shared state
 * beyond this process.
 *
 * Modes: pub/sub load (default), --idle N (memory per connection), --connect-rate
 * N (connection storm), --drain (persistent-session queue drain), --sessions
 * create|resume (many persistent sessions, a phase per run: see sess_* below).
 *
 * --tls CAFILE runs any mode over TLS with tern's own TLS engine
 * (include/tls/tern/tls.h): ciphertext in and out of memory BIOs, the MQTT bytes as
 * without TLS. With
 * --connect-rate, the rate then counts TLS handshake + CONNECT/CONNACK.
 *
 * --ws PATH runs any mode over WebSockets (ws://HOST:PORT/PATH, subprotocol
 * mqtt) with tern's own engine (include/stream/tern/ws.h, the client side): every
 * coalesced write is one masked binary frame, the broker's frames are unwrapped into the
 * same input path.
 *
 * Writes are coalesced: packets are appended to a per-connection buffer and
 * handed to uv_write once per loop iteration (prepare + check handles), which
 * is what keeps a single thread able to push a broker on two cores.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "tern/codec.h"

#include "tern/tls.h"
#include "tern/ws.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define HDR_LEN 16
#define MAX_PACKET (64u * 1024 * 1024)
#define RBUF_MIN 4096
#define RBUF_MAX (256 * 1024)
#define SEQWIN_BITS 512
#define TOPIC_MAX 64
#define MAX_SRC_ADDRS 64
#define MAX_PORTS 16

/* ---- log-linear latency histogram (HDR style) -------------------------------
 * Values in microseconds. Below 128 one bucket per value; above, 64 buckets per
 * power of two, so a bucket is at most 1/64 (~1.6%) wide, ~0.8% from its middle.
 * 60 s < 2^26 us needs 128 + 20 * 64 buckets. */
#define HIST_SUB 64
#define HIST_BUCKETS (2 * HIST_SUB + 20 * HIST_SUB)
#define HIST_MAX_US 60000000ull

struct hist {
    uint64_t counts[HIST_BUCKETS];
    uint64_t total;
    uint64_t max_ns;
    double sum_us;
};

static int hist_index(uint64_t us)
{
    if (us < 2 * HIST_SUB)
        return (int)us;
    int log2v = 63 - __builtin_clzll(us);
    int shift = log2v - 6; /* us >> shift lands in [64, 128) */
    int idx = 2 * HIST_SUB + (shift - 1) * HIST_SUB + (int)((us >> shift) - HIST_SUB);
    return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

/* Middle of the bucket's value range, the value we report for it. */
static double hist_value(int idx)
{
    if (idx < 2 * HIST_SUB)
        return idx;
    int shift = (idx - 2 * HIST_SUB) / HIST_SUB + 1;
    uint64_t base = (uint64_t)(HIST_SUB + (idx - 2 * HIST_SUB) % HIST_SUB) << shift;
    return (double)base + (double)((1ull << shift) - 1) / 2.0;
}

static void hist_record_ns(struct hist *h, uint64_t ns)
{
    uint64_t us = ns / 1000;
    if (us > HIST_MAX_US)
        us = HIST_MAX_US;
    h->counts[hist_index(us)]++;
    h->total++;
    h->sum_us += (double)ns / 1000.0;
    if (ns > h->max_ns)
        h->max_ns = ns;
}

static double hist_pct(const struct hist *h, double pct)
{
    if (h->total == 0)
        return 0;
    uint64_t want = (uint64_t)ceil(pct / 100.0 * (double)h->total);
    if (want == 0)
        want = 1;
    uint64_t seen = 0;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= want) {
            double v = hist_value(i);
            double mx = (double)h->max_ns / 1000.0;
            return v > mx ? mx : v; /* never report above the exact max */
        }
    }
    return (double)h->max_ns / 1000.0;
}

/* ---- options ---------------------------------------------------------------- */

enum mode {
    MODE_PUBSUB,
    MODE_IDLE,
    MODE_STORM,
    MODE_DRAIN,
    MODE_SESS_CREATE,
    MODE_SESS_RESUME
};

struct opts {
    const char *host;
    int port;
    struct sockaddr_in src[MAX_SRC_ADDRS];
    int nsrc;
    /* Per-role broker ports (a cluster: publishers on one node, subscribers on
     * another); connection i of a role uses ports[i % n]. Empty: --port. */
    int pub_ports[MAX_PORTS], npub_ports;
    int sub_ports[MAX_PORTS], nsub_ports;
    int pubs, subs, topics;
    const char *sub_filter;
    const char *topic_prefix;
    int qos;
    int size;
    double rate;
    int window;
    int qos0_window;
    size_t max_unsent;
    double duration_s, warmup_s, grace_s, connect_timeout_s;
    int clean;
    char prefix[64];
    int version;
    int keepalive_s;
    int concurrency;
    enum mode mode;
    int nconns;   /* idle / storm */
    int idle_sub; /* --idle-subscribe: each idle connection subscribes */
    int idle_off; /* --idle-offline: ... and disconnects (the session stays) */
    int messages; /* drain: messages per publisher */
    int rss_pid;
    int json;
    const char *label;
    const char *tls_ca;  /* --tls: verify the broker against this CA */
    int tls12;           /* --tls-1.2: at most TLS 1.2 */
    const char *ws_path; /* --ws: over WebSockets at this path */
    /* --sessions resume */
    int expect;  /* messages each session must receive (seqs 0..expect-1) */
    int hold;    /* stay connected after the queue; fail over when dropped */
    int no_ack;  /* do not acknowledge before a fail-over (the queue stays in flight) */
    int retries; /* reconnects of one session after a failure */
    int failover_ports[MAX_PORTS], nfailover_ports;
};

/* ---- connections -------------------------------------------------------------- */

enum role { ROLE_PUB, ROLE_SUB, ROLE_IDLE };

enum cstate {
    CS_NEW,
    CS_TCP,  /* TCP connect in progress */
    CS_MQTT, /* CONNECT sent, waiting for CONNACK */
    CS_SUBSCRIBING,
    CS_READY,
    CS_CLOSING,
    CS_CLOSED,
};

struct wreq {
    uv_write_t req;
    struct conn *c;
    size_t len, cap;
    uint8_t data[];
};

struct seqwin {
    uint32_t hi; /* highest sequence seen + 1; 0 = none yet */
    uint64_t bits[SEQWIN_BITS / 64];
};

struct conn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_shutdown_t sreq;
    struct bench *b;
    enum role role;
    enum cstate state;
    int index; /* within its role */
    bool failed, counted_done, dirty, session_present, clean;

    uint8_t *rbuf;
    size_t rlen, rcap;
    struct tern_tls_engine *tls; /* --tls; NULL until the TCP connect */
    struct tern_ws_engine *ws;   /* --ws; NULL until the TCP connect */
    struct wreq *w;              /* pending bytes not yet handed to uv_write */
    size_t wbytes_inflight;
    uint64_t last_send_ns;

    /* publisher */
    char topic[TOPIC_MAX];
    uint32_t seq, inflight, sent_target;
    uint64_t delivered;   /* deliveries of our messages seen by our subscribers */
    uint64_t progress_ns; /* when delivered last moved */
    uint32_t fanout;      /* subscribers matching our topic */
    uint16_t *free_pids;  /* stack of free packet ids 1..window */
    uint32_t nfree;
    uint64_t *pid_sent_ns;
    uint8_t *pid_measured;

    /* subscriber */
    uint32_t seen_mask;   /* --sessions: sequences 0..31 received this round */
    uint16_t attempts;    /* --sessions: reconnects after a failure */
    bool failover, goal;  /* --sessions: moved to a failover port; queue complete */
    uint64_t retry_at_ns; /* --sessions: not before */
    char filter[TOPIC_MAX];
    struct seqwin *seen; /* one per publisher, lazily allocated */
};

enum phase {
    PH_SETUP_SUBS,
    PH_SETUP_PUBS,
    PH_RUN,
    PH_GRACE,
    PH_HOLD,          /* idle mode: keep connections open */
    PH_DRAIN_OFFLINE, /* drain: subscribers disconnecting */
    PH_DRAIN_PUBLISH,
    PH_DRAIN_RECONNECT,
    PH_SESS_RESUME, /* --sessions resume: reconnect, receive the queue */
    PH_SESS_HOLD,   /* with --hold: connected, waiting for a drop */
    PH_SESS_STORM,  /* with --hold: dropped sessions reconnecting elsewhere */
    PH_CLOSING,
    PH_DONE,
};

struct stats {
    uint64_t sent, sent_window, acked, acked_window;
    uint64_t recv_total, recv_in_window, recv_measured_unique, dups, out_of_window;
    uint64_t expected;
    uint64_t connect_failures, connected, session_present, foreign;
    uint64_t protocol_errors;
    /* --sessions resume */
    uint64_t goals, not_present, retries, storm_drops, storm_goals, storm_present;
    struct hist lat, ack_lat;
};

struct bench {
    uv_loop_t loop;
    struct opts o;
    struct sockaddr_in dst;
    uv_prepare_t prepare;
    uv_check_t check;
    uv_timer_t tick;     /* 1 ms: rate pacing and phase changes */
    uv_timer_t watchdog; /* hard bound on the whole run */
    uv_signal_t sigint;

    struct conn *conns;
    int nconns;
    struct conn **dirty;
    int ndirty;
    struct conn *pubs, *subs; /* slices of conns */
    int npubs, nsubs;
    uint32_t *match_count; /* subscribers matching <topic prefix>/<t> */

    /* connection scheduler: conns [sched_next, sched_end) still to start */
    struct conn *sched;
    int sched_next, sched_end, sched_active, sched_done;

    enum phase phase;
    uint64_t t_start_ns, t_drain_start_ns, t_phase_ns, t_run_ns, t_win_start_ns,
        t_win_end_ns, t_end_ns;
    uint64_t t_connect_start_ns, t_connect_done_ns, t_last_recv_ns;
    long rss_before_kb, rss_after_kb;
    int src_rr;
    bool interrupted;
    int open; /* handles initialised and not yet closed */
    uint64_t t_ping_ns;
    uint8_t *payload;          /* scratch for building payloads */
    struct tern_tls_ctx *tls;  /* --tls */
    uint8_t *tls_in, *tls_out; /* ciphertext scratch (and --ws frames) */
    struct tern_ws_opts ws;    /* --ws */
    struct stats st;
    /* --sessions: connections waiting to reconnect, FIFO (each at most once) */
    struct conn **retry_q;
    int retry_head, retry_len, retry_cap;
    uint64_t t_goal_last_ns, t_drop_ns, t_storm_last_ns, t_hold_ns;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "tern-bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p)
        die("out of memory");
    return p;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static struct tern_bytes bstr(const char *s)
{
    return (struct tern_bytes){(const uint8_t *)s, (uint32_t)strlen(s)};
}

/* MQTT topic filter matching, enough for the bench's own topics. */
static bool topic_match(const char *filter, const char *topic)
{
    while (*filter) {
        if (*filter == '#')
            return true;
        if (*filter == '+') {
            while (*topic && *topic != '/')
                topic++;
            filter++;
        } else {
            if (*filter != *topic)
                return false;
            filter++;
            topic++;
        }
        if (!*filter)
            return !*topic;
        if (*filter == '/' && !*topic)
            return strcmp(filter, "/#") == 0;
    }
    return !*topic;
}

static long read_rss_kb(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* ---- output --------------------------------------------------------------------- */

static void mark_dirty(struct conn *c)
{
    if (!c->dirty) {
        c->dirty = true;
        c->b->dirty[c->b->ndirty++] = c;
    }
}

/* Makes room for `need` more pending bytes. */
static uint8_t *wspace(struct conn *c, size_t need)
{
    struct wreq *w = c->w;
    if (!w || w->cap - w->len < need) {
        size_t cap = w ? w->cap * 2 : 4096;
        while (cap - (w ? w->len : 0) < need)
            cap *= 2;
        w = realloc(w, sizeof *w + cap);
        if (!w)
            die("out of memory");
        if (!c->w)
            w->len = 0;
        w->cap = cap;
        c->w = w;
    }
    return w->data + w->len;
}

static size_t pending_bytes(const struct conn *c)
{
    return (c->w ? c->w->len : 0) + c->wbytes_inflight;
}

static void send_packet(struct conn *c, const struct tern_packet *p)
{
    if (c->state == CS_CLOSING || c->state == CS_CLOSED)
        return;
    size_t avail = c->w ? c->w->cap - c->w->len : 0;
    size_t n =
        tern_codec_encode(p, (uint8_t)c->b->o.version, c->w ? wspace(c, 0) : NULL, avail);
    if (n == 0)
        die("codec could not encode packet type %d", p->type);
    if (n > avail) {
        uint8_t *dst = wspace(c, n);
        if (tern_codec_encode(p, (uint8_t)c->b->o.version, dst, n) != n)
            die("codec encode size changed");
    }
    c->w->len += n;
    c->last_send_ns = now_ns();
    mark_dirty(c);
}

static void conn_close(struct conn *c);

static void on_write(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct conn *c = w->c;
    c->wbytes_inflight -= w->len;
    free(w);
    if (status < 0 && c->state != CS_CLOSING && c->state != CS_CLOSED) {
        c->failed = true;
        conn_close(c);
    }
}

#define TLS_CHUNK 65536

/* Hands bytes to uv_write in a request of their own. */
static void write_raw(struct conn *c, const uint8_t *data, size_t len)
{
    struct wreq *w = malloc(sizeof *w + len);
    if (!w)
        die("out of memory");
    memcpy(w->data, data, len);
    w->len = w->cap = len;
    w->c = c;
    uv_buf_t buf = uv_buf_init((char *)w->data, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write) < 0) {
        free(w);
        c->failed = true;
        conn_close(c);
        return;
    }
    c->wbytes_inflight += len;
}

/* Sends the ciphertext the TLS engine has ready. */
static void tls_send(struct conn *c)
{
    size_t n;
    while (c->state != CS_CLOSED && !uv_is_closing((uv_handle_t *)&c->tcp) &&
           (n = tern_tls_engine_take(c->tls, c->b->tls_out, TLS_CHUNK)) > 0)
        write_raw(c, c->b->tls_out, n);
}

/* Sends the frames the WebSocket engine has ready (the upgrade request too). */
static void ws_send(struct conn *c)
{
    size_t n;
    while (c->state != CS_CLOSED && !uv_is_closing((uv_handle_t *)&c->tcp) &&
           (n = tern_ws_engine_take(c->ws, c->b->tls_out, TLS_CHUNK)) > 0)
        write_raw(c, c->b->tls_out, n);
}

static void flush_one(struct conn *c)
{
    struct wreq *w = c->w;
    if (!w || w->len == 0 || c->state == CS_CLOSED || c->state == CS_TCP ||
        c->state == CS_NEW)
        return;
    if (c->ws) {
        if (!tern_ws_engine_open(c->ws))
            return; /* CONNECT waits for the upgrade */
        if (tern_ws_engine_write(c->ws, w->data, w->len) != TERN_OK) {
            c->failed = true;
            conn_close(c);
            return;
        }
        w->len = 0;
        ws_send(c);
        return;
    }
    if (c->tls) {
        if (!tern_tls_engine_established(c->tls))
            return; /* CONNECT waits for the handshake */
        if (tern_tls_engine_write(c->tls, w->data, w->len) != TERN_OK) {
            c->failed = true;
            conn_close(c);
            return;
        }
        w->len = 0;
        tls_send(c);
        return;
    }
    c->w = NULL;
    w->c = c;
    uv_buf_t buf = uv_buf_init((char *)w->data, (unsigned)w->len);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write);
    if (rc < 0) {
        free(w); /* an error return means the callback never runs */
        c->failed = true;
        conn_close(c);
        return;
    }
    c->wbytes_inflight += w->len;
}

static void flush_all(struct bench *b)
{
    /* flush_one may close, which never re-dirties, so the list is stable. */
    for (int i = 0; i < b->ndirty; i++) {
        b->dirty[i]->dirty = false;
        flush_one(b->dirty[i]);
    }
    b->ndirty = 0;
}

/* ---- connection lifecycle -------------------------------------------------------- */

static void sched_finished(struct conn *c);
static bool sched_account(struct conn *c, bool ok);

static void on_close(uv_handle_t *h)
{
    struct conn *c = (struct conn *)h->data;
    c->state = CS_CLOSED;
    c->b->open--;
    free(c->rbuf);
    c->rbuf = NULL;
    c->rlen = c->rcap = 0;
    free(c->w);
    c->w = NULL;
    tern_tls_engine_free(c->tls);
    c->tls = NULL;
    tern_ws_engine_free(c->ws);
    c->ws = NULL;
    sched_finished(c);
}

static void conn_close(struct conn *c)
{
    if (c->state == CS_CLOSED || c->state == CS_NEW)
        return;
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_close);
    c->state = CS_CLOSING;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    struct conn *c = req->data;
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_close);
}

/* DISCONNECT, then shutdown after the pending writes, then close. */
static void conn_disconnect(struct conn *c)
{
    if (c->state == CS_CLOSING || c->state == CS_CLOSED || c->state == CS_NEW)
        return;
    if (c->state == CS_TCP) {
        conn_close(c);
        return;
    }
    struct tern_packet p = {.type = TERN_DISCONNECT};
    send_packet(c, &p);
    flush_one(c);
    if (c->state == CS_CLOSING || c->state == CS_CLOSED)
        return;
    c->state = CS_CLOSING;
    c->sreq.data = c;
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) < 0)
        uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct conn *c = (struct conn *)h->data;
    if (c->tls || c->ws) {
        *buf = uv_buf_init((char *)c->b->tls_in, TLS_CHUNK);
        return;
    }
    /* Start small (thousands of idle connections), double while reads fill it. */
    if (c->rcap - c->rlen < 1024 || !c->rbuf) {
        size_t cap = c->rcap ? c->rcap * 2 : RBUF_MIN;
        uint8_t *nb = realloc(c->rbuf, cap);
        if (!nb)
            die("out of memory");
        c->rbuf = nb;
        c->rcap = cap;
    }
    *buf = uv_buf_init((char *)c->rbuf + c->rlen, (unsigned)(c->rcap - c->rlen));
}

static void handle_packet(struct conn *c, const struct tern_packet *p);
static void process_input(struct conn *c, bool filled);
static void tls_input(struct conn *c, const uint8_t *data, size_t len);
static void ws_input(struct conn *c, const uint8_t *data, size_t len);

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    struct conn *c = (struct conn *)s->data;
    if (n < 0) {
        if (c->state != CS_CLOSING && c->b->phase != PH_CLOSING)
            c->failed = true;
        conn_close(c);
        return;
    }
    if (n == 0)
        return;
    if (c->tls) {
        tls_input(c, (const uint8_t *)buf->base, (size_t)n);
        return;
    }
    if (c->ws) {
        ws_input(c, (const uint8_t *)buf->base, (size_t)n);
        return;
    }
    bool filled = (size_t)n == c->rcap - c->rlen;
    c->rlen += (size_t)n;
    process_input(c, filled);
}

/* Decodes and handles every whole packet in rbuf. */
static void process_input(struct conn *c, bool filled)
{
    size_t off = 0;
    while (off < c->rlen && c->state != CS_CLOSED) {
        size_t flen = 0;
        struct tern_codec_error err = {0};
        int rc = tern_codec_frame(c->rbuf + off, c->rlen - off, MAX_PACKET, &flen, &err);
        if (rc == TERN_EAGAIN)
            break;
        struct tern_packet p;
        if (rc == TERN_OK)
            rc = tern_codec_decode(c->rbuf + off, flen, (uint8_t)c->b->o.version, &p,
                                   &err);
        if (rc != TERN_OK) {
            fprintf(stderr, "tern-bench: bad packet from broker: %s\n",
                    err.msg ? err.msg : "?");
            c->b->st.protocol_errors++;
            c->failed = true;
            conn_close(c);
            return;
        }
        handle_packet(c, &p);
        off += flen;
    }
    if (c->rbuf && off > 0) {
        memmove(c->rbuf, c->rbuf + off, c->rlen - off);
        c->rlen -= off;
    }
    /* Shrink back is not worth it; only grow while reads fill the buffer. */
    if (filled && c->rcap < RBUF_MAX && c->rbuf) {
        uint8_t *nb = realloc(c->rbuf, c->rcap * 2);
        if (!nb)
            die("out of memory");
        c->rbuf = nb;
        c->rcap *= 2;
    }
}

static void send_connect(struct conn *c)
{
    struct bench *b = c->b;
    char id[128];
    const char *kind = c->role == ROLE_PUB ? "p" : c->role == ROLE_SUB ? "s" : "i";
    snprintf(id, sizeof id, "%s%s%d", b->o.prefix, kind, c->index);
    struct tern_packet p = {.type = TERN_CONNECT};
    struct tern_connect *cn = &p.u.connect;
    cn->protocol_name = bstr("MQTT");
    cn->version = (uint8_t)b->o.version;
    cn->clean_start = c->clean;
    cn->keepalive_s = (uint16_t)b->o.keepalive_s;
    cn->client_id = bstr(id);
    if (b->o.version == TERN_MQTT_5) {
        cn->props.mask = TERN_PROP_BIT(TERN_PROP_RECEIVE_MAX);
        cn->props.receive_max = 65535;
        if (!c->clean) {
            /* v5 ends a session at disconnect unless it has an expiry. */
            cn->props.mask |= TERN_PROP_BIT(TERN_PROP_SESSION_EXPIRY);
            cn->props.session_expiry = 3600;
        }
    }
    send_packet(c, &p);
    c->state = CS_MQTT;
}

/* Ciphertext from the broker: the handshake (then CONNECT), then plaintext
 * into rbuf as a plain connection's bytes. */
static void tls_input(struct conn *c, const uint8_t *data, size_t len)
{
    if (tern_tls_engine_recv(c->tls, data, len) != TERN_OK)
        die("out of memory");
    if (!tern_tls_engine_established(c->tls)) {
        int rc = tern_tls_engine_handshake(c->tls);
        tls_send(c);
        if (rc == TERN_EAGAIN)
            return;
        if (rc != TERN_OK) {
            fprintf(stderr, "tern-bench: TLS handshake: %s\n",
                    tern_tls_engine_error(c->tls));
            c->failed = true;
            conn_close(c);
            return;
        }
        send_connect(c);
        flush_one(c);
    }
    for (;;) {
        if (c->rcap - c->rlen < 1024 || !c->rbuf) {
            size_t cap = c->rcap ? c->rcap * 2 : RBUF_MIN;
            uint8_t *nb = realloc(c->rbuf, cap);
            if (!nb)
                die("out of memory");
            c->rbuf = nb;
            c->rcap = cap;
        }
        size_t got = 0;
        int rc = tern_tls_engine_read(c->tls, c->rbuf + c->rlen, c->rcap - c->rlen, &got);
        if (rc == TERN_EAGAIN)
            break;
        if (rc != TERN_OK) {
            if (c->state != CS_CLOSING && c->b->phase != PH_CLOSING)
                c->failed = true;
            conn_close(c);
            return;
        }
        c->rlen += got;
        process_input(c, false);
        if (c->state == CS_CLOSED || c->state == CS_CLOSING)
            return;
    }
    tls_send(c);
}

/* Bytes from the broker over WebSockets: the 101 (then CONNECT), then the
 * payload of its frames into rbuf as a plain connection's bytes. */
static void ws_input(struct conn *c, const uint8_t *data, size_t len)
{
    if (tern_ws_engine_recv(c->ws, data, len) != TERN_OK)
        die("out of memory");
    bool was_open = tern_ws_engine_open(c->ws);
    for (;;) {
        if (c->rcap - c->rlen < 1024 || !c->rbuf) {
            size_t cap = c->rcap ? c->rcap * 2 : RBUF_MIN;
            uint8_t *nb = realloc(c->rbuf, cap);
            if (!nb)
                die("out of memory");
            c->rbuf = nb;
            c->rcap = cap;
        }
        size_t got = 0;
        int rc = tern_ws_engine_read(c->ws, c->rbuf + c->rlen, c->rcap - c->rlen, &got);
        if (!was_open && tern_ws_engine_open(c->ws)) {
            was_open = true;
            send_connect(c);
            flush_one(c);
        }
        if (rc == TERN_EAGAIN)
            break;
        if (rc != TERN_OK) {
            if (!tern_ws_engine_open(c->ws))
                fprintf(stderr, "tern-bench: WebSocket upgrade: %s\n",
                        tern_ws_engine_error(c->ws));
            if (c->state != CS_CLOSING && c->b->phase != PH_CLOSING)
                c->failed = true;
            conn_close(c);
            return;
        }
        c->rlen += got;
        process_input(c, false);
        if (c->state == CS_CLOSED || c->state == CS_CLOSING)
            return;
    }
    ws_send(c); /* pongs */
}

static void on_connect(uv_connect_t *req, int status)
{
    struct conn *c = req->data;
    if (c->state == CS_CLOSING || c->state == CS_CLOSED)
        return;
    if (status < 0) {
        c->failed = true;
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->state = CS_MQTT;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
        c->failed = true;
        conn_close(c);
        return;
    }
    if (c->b->tls) {
        c->tls = tern_tls_engine_new(c->b->tls);
        if (!c->tls)
            die("out of memory");
        tern_tls_engine_handshake(c->tls); /* the ClientHello */
        tls_send(c);
        return;
    }
    if (c->b->o.ws_path) {
        c->ws =
            tern_ws_engine_new_client(&c->b->ws, c->b->o.host, c->b->o.ws_path, "mqtt");
        if (!c->ws)
            die("out of memory");
        ws_send(c); /* the upgrade request; CONNECT after the 101 */
        return;
    }
    send_connect(c);
}

static struct sockaddr_in conn_dst(const struct conn *c)
{
    const struct opts *o = &c->b->o;
    struct sockaddr_in dst = c->b->dst;
    if (c->role == ROLE_PUB && o->npub_ports > 0)
        dst.sin_port = htons((uint16_t)o->pub_ports[c->index % o->npub_ports]);
    else if (c->role == ROLE_SUB && c->failover && o->nfailover_ports > 0)
        dst.sin_port = htons((uint16_t)o->failover_ports[c->index % o->nfailover_ports]);
    else if (c->role == ROLE_SUB && o->nsub_ports > 0)
        dst.sin_port = htons((uint16_t)o->sub_ports[c->index % o->nsub_ports]);
    return dst;
}

static void conn_start(struct conn *c)
{
    struct bench *b = c->b;
    if (c->state != CS_NEW) {
        sched_account(c, false); /* still open from an earlier phase */
        return;
    }
    c->state = CS_TCP;
    c->failed = false;
    c->counted_done = false;
    c->session_present = false;
    c->rlen = 0;
    int rc = uv_tcp_init_ex(&b->loop, &c->tcp, AF_INET);
    if (rc < 0) {
        c->state = CS_NEW;
        c->failed = true;
        sched_account(c, false); /* the caller's loop goes on: no recursion */
        return;
    }
    b->open++;
    c->tcp.data = c;
    if (b->o.nsrc > 0) {
        uv_os_fd_t fd;
        if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) {
            /* Port chosen at connect time, per (src, dst): many sources, many ports. */
            int one = 1;
            setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        }
        const struct sockaddr_in *src = &b->o.src[b->src_rr++ % b->o.nsrc];
        if (uv_tcp_bind(&c->tcp, (const struct sockaddr *)src, 0) < 0) {
            c->failed = true;
            conn_close(c);
            return;
        }
    }
    c->creq.data = c;
    struct sockaddr_in dst = conn_dst(c);
    rc = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&dst, on_connect);
    if (rc < 0) {
        c->failed = true;
        conn_close(c);
    }
}

/* ---- connection scheduler: at most --concurrency handshakes at once ---------------- */

static void sched_pump(struct bench *b)
{
    uint64_t t = b->retry_len ? now_ns() : 0;
    while (b->sched_active < b->o.concurrency) {
        struct conn *c;
        if (b->retry_len && b->retry_q[b->retry_head]->retry_at_ns <= t) {
            c = b->retry_q[b->retry_head];
            b->retry_head = (b->retry_head + 1) % b->retry_cap;
            b->retry_len--;
        } else if (b->sched_next < b->sched_end) {
            c = &b->sched[b->sched_next++];
        } else {
            break;
        }
        b->sched_active++;
        conn_start(c);
    }
}

/* --sessions: a session to connect again after delay_ms (a failure, or a drop
 * while held). It keeps its handshake slot until then only if it had one. */
static void sess_requeue(struct conn *c, uint64_t delay_ms)
{
    struct bench *b = c->b;
    c->state = CS_NEW;
    c->retry_at_ns = now_ns() + delay_ms * 1000000ull;
    b->retry_q[(b->retry_head + b->retry_len) % b->retry_cap] = c;
    b->retry_len++;
}

static void sched_begin(struct bench *b, struct conn *first, int n)
{
    b->sched = first;
    b->sched_next = 0;
    b->sched_end = n;
    b->sched_active = 0;
    b->sched_done = 0;
    if (b->t_connect_start_ns == 0)
        b->t_connect_start_ns = now_ns();
    sched_pump(b);
}

/* A connection reached its goal (ready) or failed: one handshake slot frees up. */
static bool sched_account(struct conn *c, bool ok)
{
    struct bench *b = c->b;
    if (c->counted_done)
        return false;
    c->counted_done = true;
    if (!ok)
        b->st.connect_failures++;
    else
        b->st.connected++;
    b->sched_active--;
    b->sched_done++;
    if (b->sched_done == b->sched_end)
        b->t_connect_done_ns = now_ns();
    return true;
}

static void sched_complete(struct conn *c, bool ok)
{
    if (sched_account(c, ok))
        sched_pump(c->b);
}

static void sess_finished(struct conn *c);

static void sched_finished(struct conn *c)
{
    if (c->b->o.mode == MODE_SESS_RESUME ||
        (c->b->o.mode == MODE_SESS_CREATE && !c->counted_done)) {
        sess_finished(c); /* retried after a failure */
        return;
    }
    /* Closed before reaching its goal: a failure for the scheduler. */
    if (!c->counted_done && c->b->sched && c >= c->b->sched &&
        c < c->b->sched + c->b->sched_end)
        sched_complete(c, false);
}

/* ---- publishing
 * ------------------------------------------------------------------------ */

static bool pub_can_send(struct conn *c)
{
    const struct bench *b = c->b;
    if (c->state != CS_READY)
        return false;
    if (b->o.qos > 0 && c->nfree == 0)
        return false;
    if (b->o.qos == 0 && b->o.qos0_window > 0 && c->fanout > 0) {
        /* QoS 0 has no ack: bound what sits in the broker and in kernel buffers by
         * the deliveries our own subscribers have not seen yet, at least two
         * messages' worth. If the broker dropped the lot, stop waiting after 1 s. */
        uint64_t owed = (uint64_t)c->seq * c->fanout - c->delivered;
        uint64_t cap = (uint64_t)b->o.qos0_window;
        if (cap < 2ull * c->fanout)
            cap = 2ull * c->fanout;
        if (owed >= cap) {
            if (now_ns() - c->progress_ns < 1000000000ull)
                return false;
            c->delivered = (uint64_t)c->seq * c->fanout;
            c->progress_ns = now_ns();
        }
    }
    return pending_bytes(c) < b->o.max_unsent;
}

static void publish_one(struct conn *c)
{
    struct bench *b = c->b;
    uint64_t t = now_ns();
    put_u64(b->payload, t);
    put_u32(b->payload + 8, (uint32_t)c->index);
    put_u32(b->payload + 12, c->seq++);
    struct tern_packet p = {.type = TERN_PUBLISH};
    p.u.publish.qos = (uint8_t)b->o.qos;
    p.u.publish.topic = bstr(c->topic);
    p.u.publish.payload = (struct tern_bytes){b->payload, (uint32_t)b->o.size};
    bool measured = t >= b->t_win_start_ns && t < b->t_win_end_ns;
    if (b->o.qos > 0) {
        uint16_t pid = c->free_pids[--c->nfree];
        p.u.publish.packet_id = pid;
        c->pid_sent_ns[pid] = t;
        c->pid_measured[pid] = measured;
        c->inflight++;
    }
    send_packet(c, &p);
    b->st.sent++;
    if (measured) {
        b->st.sent_window++;
        uint32_t topic_idx = (uint32_t)c->index % (uint32_t)b->o.topics;
        b->st.expected += b->match_count[topic_idx];
    }
}

static void pub_ack(struct conn *c, uint16_t pid)
{
    struct bench *b = c->b;
    if (pid == 0 || pid > (uint32_t)b->o.window || c->pid_sent_ns[pid] == 0) {
        b->st.protocol_errors++;
        return;
    }
    uint64_t t = now_ns();
    b->st.acked++;
    if (c->pid_measured[pid]) {
        b->st.acked_window++;
        hist_record_ns(&b->st.ack_lat, t - c->pid_sent_ns[pid]);
    }
    c->pid_sent_ns[pid] = 0;
    c->free_pids[c->nfree++] = pid;
    c->inflight--;
}

static bool publishing(const struct bench *b)
{
    return b->phase == PH_RUN || b->phase == PH_DRAIN_PUBLISH;
}

/* Open loop: fill every publisher up to its window / unsent cap. */
static void pump_max(struct bench *b)
{
    for (int i = 0; i < b->npubs; i++) {
        struct conn *c = &b->pubs[i];
        while (pub_can_send(c) &&
               ((b->o.mode != MODE_DRAIN && b->o.mode != MODE_SESS_CREATE) ||
                c->seq < c->sent_target))
            publish_one(c);
    }
}

/* Paced: each publisher owes floor(elapsed * rate / pubs) messages. */
static void pump_paced(struct bench *b, uint64_t t)
{
    double per_pub = b->o.rate / b->npubs;
    double elapsed = (double)(t - b->t_run_ns) / 1e9;
    uint64_t due = (uint64_t)(elapsed * per_pub);
    for (int i = 0; i < b->npubs; i++) {
        struct conn *c = &b->pubs[i];
        while (c->seq < due && pub_can_send(c))
            publish_one(c);
    }
}

static void on_loop_edge(struct bench *b)
{
    if (publishing(b) &&
        (b->o.rate <= 0 || b->o.mode == MODE_DRAIN || b->o.mode == MODE_SESS_CREATE))
        pump_max(b);
    flush_all(b);
}

static void on_prepare(uv_prepare_t *h)
{
    on_loop_edge(h->data);
}

static void on_check(uv_check_t *h)
{
    on_loop_edge(h->data);
}

/* ---- receiving
 * ------------------------------------------------------------------------------ */

static void send_ack(struct conn *c, uint8_t type, uint16_t pid)
{
    struct tern_packet p = {.type = type};
    p.u.ack.packet_id = pid;
    send_packet(c, &p);
}

/* Returns true when (pub, seq) was already seen by this subscriber. */
static bool seen_before(struct conn *c, uint32_t pub, uint32_t seq)
{
    struct bench *b = c->b;
    if (!c->seen)
        c->seen = xcalloc((size_t)b->npubs, sizeof *c->seen);
    struct seqwin *w = &c->seen[pub];
    uint32_t bit = seq % SEQWIN_BITS;
    if (w->hi == 0 || seq >= w->hi) {
        uint32_t from = w->hi;
        if (w->hi == 0 || seq - from >= SEQWIN_BITS)
            memset(w->bits, 0, sizeof w->bits);
        else
            for (uint32_t s = from; s < seq; s++)
                w->bits[(s % SEQWIN_BITS) / 64] &= ~(1ull << (s % 64));
        w->bits[bit / 64] |= 1ull << (bit % 64);
        w->hi = seq + 1;
        return false;
    }
    if (w->hi - seq > SEQWIN_BITS) {
        b->st.out_of_window++; /* too old to tell: count it as new */
        return false;
    }
    if (w->bits[bit / 64] & (1ull << (bit % 64)))
        return true;
    w->bits[bit / 64] |= 1ull << (bit % 64);
    return false;
}

static void sess_goal(struct conn *c);

/* --sessions resume: the queue of one session is sequences 0..expect-1 of the
 * one publisher of its topic (the create run); duplicates do not count. */
static void sess_message(struct conn *c, const struct tern_publish *pub)
{
    struct bench *b = c->b;
    b->st.recv_total++;
    b->t_last_recv_ns = now_ns();
    if (pub->qos > 0 && !(b->o.no_ack && !c->failover))
        send_ack(c, pub->qos == 1 ? TERN_PUBACK : TERN_PUBREC, pub->packet_id);
    if (pub->payload.len < HDR_LEN)
        return;
    uint32_t seq = get_u32(pub->payload.ptr + 12);
    if (seq >= 32 || (c->seen_mask & (1u << seq))) {
        b->st.dups++;
        return;
    }
    c->seen_mask |= 1u << seq;
    b->st.recv_measured_unique++;
    if (!c->goal && __builtin_popcount(c->seen_mask) >= b->o.expect)
        sess_goal(c);
}

static void sub_message(struct conn *c, const struct tern_publish *pub)
{
    struct bench *b = c->b;
    uint64_t t = now_ns();
    if (b->o.mode == MODE_SESS_RESUME) {
        sess_message(c, pub);
        return;
    }
    b->st.recv_total++;
    b->t_last_recv_ns = t;
    if (t >= b->t_win_start_ns && t < b->t_win_end_ns)
        b->st.recv_in_window++;
    if (pub->qos == 1)
        send_ack(c, TERN_PUBACK, pub->packet_id);
    else if (pub->qos == 2)
        send_ack(c, TERN_PUBREC, pub->packet_id);
    if (pub->payload.len < HDR_LEN)
        return;
    uint64_t ts = get_u64(pub->payload.ptr);
    uint32_t pubid = get_u32(pub->payload.ptr + 8);
    uint32_t seq = get_u32(pub->payload.ptr + 12);
    if (pubid >= (uint32_t)b->npubs || ts < b->t_start_ns || ts > t) {
        b->st.foreign++; /* not ours: another run's leftovers */
        return;
    }
    if (seen_before(c, pubid, seq)) {
        b->st.dups++;
        return;
    }
    b->pubs[pubid].delivered++;
    b->pubs[pubid].progress_ns = t;
    bool measured =
        b->o.mode == MODE_DRAIN || (ts >= b->t_win_start_ns && ts < b->t_win_end_ns);
    if (measured) {
        b->st.recv_measured_unique++;
        if (b->o.mode != MODE_DRAIN && t >= ts)
            hist_record_ns(&b->st.lat, t - ts);
    }
}

static void send_subscribe(struct conn *c)
{
    uint8_t list[TOPIC_MAX + 8];
    size_t n = tern_codec_put_filter(list, sizeof list, bstr(c->filter), c->b->o.qos);
    if (n == 0 || n > sizeof list)
        die("cannot encode filter %s", c->filter);
    struct tern_packet p = {.type = TERN_SUBSCRIBE};
    p.u.sub.packet_id = 1;
    p.u.sub.list = (struct tern_bytes){list, (uint32_t)n};
    p.u.sub.count = 1;
    send_packet(c, &p);
    c->state = CS_SUBSCRIBING;
}

static void handle_connack(struct conn *c, const struct tern_connack *ca)
{
    struct bench *b = c->b;
    if (c->state != CS_MQTT)
        return;
    if (ca->reason != 0) {
        c->failed = true;
        conn_close(c);
        return;
    }
    c->session_present = ca->session_present;
    if (c->role == ROLE_PUB && (ca->props.mask & TERN_PROP_BIT(TERN_PROP_RECEIVE_MAX)) &&
        ca->props.receive_max > 0 && c->nfree > ca->props.receive_max)
        c->nfree = ca->props.receive_max; /* the broker's receive maximum wins */
    if (ca->session_present)
        b->st.session_present++;
    if (b->o.mode == MODE_SESS_RESUME) {
        c->state = CS_READY;
        if (c->failover && ca->session_present)
            b->st.storm_present++;
        if (!ca->session_present && b->o.expect > 0) {
            b->st.not_present++; /* nothing will come: the session is gone */
            sess_goal(c);
        } else if (__builtin_popcount(c->seen_mask) >= b->o.expect) {
            sess_goal(c);
        }
        return;
    }
    if ((c->role == ROLE_SUB && !(b->phase == PH_DRAIN_RECONNECT)) ||
        (c->role == ROLE_IDLE && b->o.idle_sub)) {
        send_subscribe(c);
        return;
    }
    c->state = CS_READY;
    sched_complete(c, true);
}

static void handle_packet(struct conn *c, const struct tern_packet *p)
{
    struct bench *b = c->b;
    switch (p->type) {
    case TERN_CONNACK:
        handle_connack(c, &p->u.connack);
        break;
    case TERN_SUBACK:
        if (c->state != CS_SUBSCRIBING)
            break;
        if (p->u.sub.list.len < 1 || p->u.sub.list.ptr[0] >= 0x80) {
            c->failed = true;
            conn_close(c);
            break;
        }
        c->state = CS_READY;
        sched_complete(c, true);
        if (b->phase == PH_DRAIN_OFFLINE || (c->role == ROLE_IDLE && b->o.idle_off))
            conn_disconnect(c);
        break;
    case TERN_PUBLISH:
        sub_message(c, &p->u.publish);
        break;
    case TERN_PUBACK:
        if (c->role == ROLE_PUB && b->o.qos == 1)
            pub_ack(c, p->u.ack.packet_id);
        break;
    case TERN_PUBREC:
        send_ack(c, TERN_PUBREL, p->u.ack.packet_id);
        break;
    case TERN_PUBREL:
        send_ack(c, TERN_PUBCOMP, p->u.ack.packet_id);
        break;
    case TERN_PUBCOMP:
        if (c->role == ROLE_PUB && b->o.qos == 2)
            pub_ack(c, p->u.ack.packet_id);
        break;
    case TERN_PINGRESP:
        break;
    case TERN_DISCONNECT:
        fprintf(stderr, "tern-bench: broker sent DISCONNECT reason 0x%02x\n",
                p->u.disconnect.reason);
        c->failed = true;
        conn_close(c);
        break;
    default:
        b->st.protocol_errors++;
        break;
    }
}

/* ---- phases
 * --------------------------------------------------------------------------------------
 */

static void set_phase(struct bench *b, enum phase ph)
{
    b->phase = ph;
    b->t_phase_ns = now_ns();
}

static void begin_closing(struct bench *b)
{
    set_phase(b, PH_CLOSING);
    b->t_end_ns = now_ns();
    b->sched = NULL;
    for (int i = 0; i < b->nconns; i++)
        conn_disconnect(&b->conns[i]);
}

static int count_open(const struct bench *b)
{
    return b->open;
}

static void compute_matches(struct bench *b)
{
    char topic[TOPIC_MAX];
    for (int t = 0; t < b->o.topics; t++) {
        snprintf(topic, sizeof topic, "%s/%d", b->o.topic_prefix, t);
        b->match_count[t] = 0;
        for (int j = 0; j < b->nsubs; j++) {
            struct conn *s = &b->subs[j];
            if (s->state == CS_READY || b->phase == PH_DRAIN_OFFLINE ||
                b->phase == PH_DRAIN_PUBLISH)
                if (!s->failed && topic_match(s->filter, topic))
                    b->match_count[t]++;
        }
    }
}

static bool sched_idle(const struct bench *b)
{
    return b->sched_done >= b->sched_end;
}

static bool all_pubs_acked(const struct bench *b)
{
    for (int i = 0; i < b->npubs; i++)
        if (b->pubs[i].state == CS_READY && b->pubs[i].inflight > 0)
            return false;
    return true;
}

static void send_pings(struct bench *b, uint64_t t)
{
    uint64_t half = (uint64_t)b->o.keepalive_s * 500000000ull;
    if (half == 0)
        return;
    for (int i = 0; i < b->nconns; i++) {
        struct conn *c = &b->conns[i];
        if (c->state == CS_READY && t - c->last_send_ns >= half) {
            struct tern_packet p = {.type = TERN_PINGREQ};
            send_packet(c, &p);
        }
    }
}

static void step_pubsub(struct bench *b, uint64_t t)
{
    double since = (double)(t - b->t_phase_ns) / 1e9;
    switch (b->phase) {
    case PH_SETUP_SUBS:
        if (sched_idle(b) || since > b->o.connect_timeout_s) {
            compute_matches(b);
            set_phase(b, PH_SETUP_PUBS);
            sched_begin(b, b->pubs, b->npubs);
        }
        break;
    case PH_SETUP_PUBS:
        if (sched_idle(b) || since > b->o.connect_timeout_s) {
            set_phase(b, PH_RUN);
            b->t_run_ns = t;
            for (int i = 0; i < b->npubs; i++) {
                b->pubs[i].progress_ns = t;
                b->pubs[i].fanout = b->match_count[i % b->o.topics];
            }
            b->t_win_start_ns = t + (uint64_t)(b->o.warmup_s * 1e9);
            b->t_win_end_ns = b->t_win_start_ns + (uint64_t)(b->o.duration_s * 1e9);
        }
        break;
    case PH_RUN:
        if (b->o.rate > 0)
            pump_paced(b, t);
        if (t >= b->t_win_end_ns)
            set_phase(b, PH_GRACE);
        break;
    case PH_GRACE:
        if ((b->st.recv_measured_unique >= b->st.expected && all_pubs_acked(b)) ||
            since > b->o.grace_s)
            begin_closing(b);
        break;
    default:
        break;
    }
}

static void step_idle(struct bench *b, uint64_t t)
{
    double since = (double)(t - b->t_phase_ns) / 1e9;
    switch (b->phase) {
    case PH_SETUP_SUBS:
        if (sched_idle(b) || since > b->o.connect_timeout_s) {
            set_phase(b, PH_HOLD);
            if (b->o.mode == MODE_IDLE)
                fprintf(stderr, "tern-bench: idle: %" PRIu64 " of %d connected\n",
                        b->st.connected, b->nconns);
        }
        break;
    case PH_HOLD:
        /* Let the broker settle before sampling its memory. */
        if (b->o.mode == MODE_IDLE && b->o.rss_pid > 0 && b->rss_after_kb < 0 &&
            (since > 1.0 || since >= b->o.duration_s))
            b->rss_after_kb = read_rss_kb(b->o.rss_pid);
        if (b->o.mode == MODE_STORM || since >= b->o.duration_s)
            begin_closing(b);
        break;
    default:
        break;
    }
}

static void step_drain(struct bench *b, uint64_t t)
{
    double since = (double)(t - b->t_phase_ns) / 1e9;
    if (b->retry_len)
        sched_pump(b); /* --sessions create: retries that are due */
    switch (b->phase) {
    case PH_DRAIN_OFFLINE:
        /* Subscribers subscribe then disconnect themselves (see SUBACK). */
        if ((sched_idle(b) && count_open(b) == 0) || since > b->o.connect_timeout_s) {
            /* --sessions create counts no deliveries: no O(subs x topics) pass */
            if (b->o.mode == MODE_DRAIN)
                compute_matches(b);
            if (b->o.mode == MODE_SESS_CREATE)
                b->t_connect_done_ns = t;
            set_phase(b, PH_DRAIN_PUBLISH);
            b->t_win_start_ns = 0;
            b->t_win_end_ns = UINT64_MAX;
            for (int i = 0; i < b->npubs; i++)
                b->pubs[i].sent_target = (uint32_t)b->o.messages;
            sched_begin(b, b->pubs, b->npubs);
        }
        break;
    case PH_DRAIN_PUBLISH: {
        bool done = sched_idle(b);
        for (int i = 0; i < b->npubs && done; i++) {
            struct conn *c = &b->pubs[i];
            if (c->state == CS_READY && (c->seq < c->sent_target || c->inflight > 0))
                done = false;
        }
        if (done || since > b->o.connect_timeout_s + b->o.duration_s) {
            for (int i = 0; i < b->npubs; i++)
                conn_disconnect(&b->pubs[i]);
            if (b->o.mode == MODE_SESS_CREATE) {
                b->t_last_recv_ns = t; /* end of the publishing, for the report */
                begin_closing(b);
                break;
            }
            set_phase(b, PH_DRAIN_RECONNECT);
            b->st.connected = 0;
            b->st.session_present = 0;
            b->t_last_recv_ns = 0;
            b->t_drain_start_ns = now_ns();
            for (int j = 0; j < b->nsubs; j++)
                if (b->subs[j].state == CS_CLOSED)
                    b->subs[j].state = CS_NEW;
            sched_begin(b, b->subs, b->nsubs);
        }
        break;
    }
    case PH_DRAIN_RECONNECT:
        if (b->st.recv_measured_unique >= b->st.expected ||
            since > b->o.duration_s + b->o.grace_s)
            begin_closing(b);
        break;
    default:
        break;
    }
}

/* ---- --sessions resume ---------------------------------------------------------
 * Each session reconnects (clean session 0 unless --clean 1), expects session
 * present and the sequences 0..expect-1 of its queue, then disconnects, so that
 * --concurrency bounds both the handshakes and the open connections: a million
 * sessions pass through under the open-file limit. With --hold they stay
 * connected; when the broker drops them (its node was killed) each reconnects to
 * --failover-ports at once and must receive its queue again (with --no-ack it was
 * never acknowledged, so it is still in flight there). A failure before the goal
 * (refused, reset) is retried after 100-200 ms, up to --retries times. */

static void sess_goal(struct conn *c)
{
    struct bench *b = c->b;
    c->goal = true;
    if (c->failover) {
        b->st.storm_goals++;
        b->t_storm_last_ns = now_ns();
    } else {
        b->st.goals++;
        b->t_goal_last_ns = now_ns();
    }
    sched_complete(c, true);
    if (!b->o.hold)
        conn_disconnect(c);
}

static void sess_finished(struct conn *c)
{
    struct bench *b = c->b;
    if (b->phase == PH_CLOSING || b->phase == PH_DONE)
        return;
    if (c->goal && b->o.mode == MODE_SESS_RESUME) {
        /* Our own DISCONNECT, or a drop of a held session: fail over. */
        if (!b->o.hold || !c->failed || b->o.nfailover_ports == 0)
            return;
        if (b->t_drop_ns == 0) {
            b->t_drop_ns = now_ns();
            set_phase(b, PH_SESS_STORM);
        }
        b->st.storm_drops++;
        c->goal = false;
        c->failover = true;
        c->seen_mask = 0; /* the queue again, from the new node */
        c->attempts = 0;
        sess_requeue(c, 0);
        sched_pump(b);
        return;
    }
    if (c->counted_done)
        return;
    b->sched_active--; /* the slot frees while the session waits */
    if (c->attempts < b->o.retries) {
        c->attempts++;
        b->st.retries++;
        sess_requeue(c, 100 + (uint64_t)(c->index % 100));
    } else {
        c->counted_done = true;
        b->st.connect_failures++;
        b->sched_done++;
    }
    sched_pump(b);
}

static void step_sess(struct bench *b, uint64_t t)
{
    double since = (double)(t - b->t_phase_ns) / 1e9;
    sched_pump(b); /* retries that are due */
    bool settled = b->sched_active == 0 && b->retry_len == 0;
    switch (b->phase) {
    case PH_SESS_RESUME:
        if (settled && sched_idle(b)) {
            if (b->o.hold) {
                set_phase(b, PH_SESS_HOLD);
                b->t_hold_ns = t;
                fprintf(stderr, "tern-bench: holding %" PRIu64 " sessions\n",
                        b->st.goals);
            } else {
                begin_closing(b);
            }
        } else if (since > b->o.connect_timeout_s) {
            begin_closing(b);
        }
        break;
    case PH_SESS_HOLD:
        if (since >= b->o.duration_s)
            begin_closing(b);
        break;
    case PH_SESS_STORM:
        if (settled || since > b->o.connect_timeout_s)
            begin_closing(b);
        break;
    default:
        break;
    }
}

static void on_tick(uv_timer_t *h)
{
    struct bench *b = h->data;
    uint64_t t = now_ns();
    if (b->phase == PH_CLOSING) {
        if (count_open(b) == 0) {
            set_phase(b, PH_DONE);
            uv_close((uv_handle_t *)&b->tick, NULL);
            uv_close((uv_handle_t *)&b->watchdog, NULL);
            uv_close((uv_handle_t *)&b->prepare, NULL);
            uv_close((uv_handle_t *)&b->check, NULL);
            uv_close((uv_handle_t *)&b->sigint, NULL);
        } else if (t - b->t_phase_ns > 2000000000ull) {
            for (int i = 0; i < b->nconns; i++)
                conn_close(&b->conns[i]); /* peers that never finished closing */
        }
        return;
    }
    if (b->interrupted) {
        begin_closing(b);
        return;
    }
    if (t - b->t_ping_ns > 1000000000ull) {
        b->t_ping_ns = t;
        send_pings(b, t);
    }
    switch (b->o.mode) {
    case MODE_PUBSUB:
        step_pubsub(b, t);
        break;
    case MODE_IDLE:
    case MODE_STORM:
        step_idle(b, t);
        break;
    case MODE_DRAIN:
    case MODE_SESS_CREATE:
        step_drain(b, t);
        break;
    case MODE_SESS_RESUME:
        step_sess(b, t);
        break;
    }
}

static void on_watchdog(uv_timer_t *h)
{
    struct bench *b = h->data;
    fprintf(stderr, "tern-bench: watchdog: run exceeded its time bound, stopping\n");
    b->interrupted = true;
    if (b->phase == PH_CLOSING) {
        for (int i = 0; i < b->nconns; i++)
            conn_close(&b->conns[i]);
    }
}

static void on_sigint(uv_signal_t *h, int sig)
{
    (void)sig;
    struct bench *b = h->data;
    b->interrupted = true;
}

/* ---- report
 * ----------------------------------------------------------------------------------------
 */

static double span_s(uint64_t from, uint64_t to)
{
    return from && to > from ? (double)(to - from) / 1e9 : 0;
}

/* create: conn_s = sessions created (CONNECT, SUBSCRIBE, DISCONNECT), drain_s =
 * the publishing. resume: the time to the last session's goal; the storm: from
 * the first drop to the last failed-over session's goal. */
static void report_sess(struct bench *b, double conn_s, double drain_s)
{
    const struct opts *o = &b->o;
    const struct stats *s = &b->st;
    uint64_t t0 = b->t_connect_start_ns;
    double resume_s = span_s(t0, b->t_goal_last_ns);
    double storm_s = span_s(b->t_drop_ns, b->t_storm_last_ns);
    if (o->mode == MODE_SESS_CREATE) {
        double pub_s = span_s(b->t_connect_done_ns, b->t_last_recv_ns);
        (void)drain_s;
        printf(o->json ? "{\"label\":\"%s\",\"mode\":\"create\",\"sessions\":%d,"
                         "\"topics\":%d,\"messages\":%d,\"create_s\":%.3f,"
                         "\"create_per_s\":%.1f,\"publish_s\":%.3f,\"published\":%" PRIu64
                         ",\"acked\":%" PRIu64 ",\"connect_failures\":%" PRIu64
                         ",\"retries\":%" PRIu64 ",\"interrupted\":%s}\n"
                       : "%screate: %d sessions over %d topics, %d messages per topic: "
                         "sessions %.3f s (%.0f/s), publish %.3f s, published %" PRIu64
                         ", acked %" PRIu64 ", connect failures %" PRIu64
                         ", retries %" PRIu64 "%s\n",
               o->json ? (o->label ? o->label : "") : "", b->nsubs, o->topics,
               o->messages, conn_s, conn_s > 0 ? (double)b->nsubs / conn_s : 0.0, pub_s,
               s->sent, s->acked, s->connect_failures, s->retries,
               o->json ? (b->interrupted ? "true" : "false")
                       : (b->interrupted ? " (interrupted)" : ""));
        return;
    }
    printf(o->json
               ? "{\"label\":\"%s\",\"mode\":\"resume\",\"sessions\":%d,"
                 "\"expect\":%d,\"resume_s\":%.3f,\"resume_per_s\":%.1f,"
                 "\"goals\":%" PRIu64 ",\"session_present\":%" PRIu64
                 ",\"not_present\":%" PRIu64 ",\"received\":%" PRIu64
                 ",\"unique\":%" PRIu64 ",\"duplicates\":%" PRIu64 ",\"retries\":%" PRIu64
                 ",\"connect_failures\":%" PRIu64 ",\"storm_drops\":%" PRIu64
                 ",\"storm_goals\":%" PRIu64 ",\"storm_present\":%" PRIu64
                 ",\"storm_s\":%.3f,\"interrupted\":%s}\n"
               : "%sresume: %d sessions, %d messages each: %.3f s (%.0f/s) to the last; "
                 "complete %" PRIu64 ", session present %" PRIu64 ", not present %" PRIu64
                 ", received %" PRIu64 " (unique %" PRIu64 ", duplicates %" PRIu64
                 "), retries %" PRIu64 ", failures %" PRIu64 "; storm: dropped %" PRIu64
                 ", resumed %" PRIu64 " (present %" PRIu64 ") in %.3f s%s\n",
           o->json ? (o->label ? o->label : "") : "", b->nsubs, o->expect, resume_s,
           resume_s > 0 ? (double)s->goals / resume_s : 0.0, s->goals, s->session_present,
           s->not_present, s->recv_total, s->recv_measured_unique, s->dups, s->retries,
           s->connect_failures, s->storm_drops, s->storm_goals, s->storm_present, storm_s,
           o->json ? (b->interrupted ? "true" : "false")
                   : (b->interrupted ? " (interrupted)" : ""));
}

static void report(struct bench *b)
{
    const struct opts *o = &b->o;
    const struct stats *s = &b->st;
    const char *mode = o->mode == MODE_PUBSUB  ? "pubsub"
                       : o->mode == MODE_IDLE  ? "idle"
                       : o->mode == MODE_STORM ? "storm"
                                               : "drain";
    double dur = o->duration_s > 0 ? o->duration_s : 1;
    uint64_t loss =
        s->expected > s->recv_measured_unique ? s->expected - s->recv_measured_unique : 0;
    double conn_s = b->t_connect_done_ns > b->t_connect_start_ns
                        ? (double)(b->t_connect_done_ns - b->t_connect_start_ns) / 1e9
                        : 0;
    double drain_s = b->t_drain_start_ns && b->t_last_recv_ns > b->t_drain_start_ns
                         ? (double)(b->t_last_recv_ns - b->t_drain_start_ns) / 1e9
                         : 0;
    if (o->mode == MODE_SESS_CREATE || o->mode == MODE_SESS_RESUME) {
        report_sess(b, conn_s, drain_s);
        return;
    }
    if (o->json) {
        printf("{\"label\":\"%s\",\"mode\":\"%s\",\"mqtt_version\":%d,\"qos\":%d,"
               "\"size\":%d,\"pubs\":%d,\"subs\":%d,\"topics\":%d,\"rate\":%.0f,"
               "\"duration_s\":%.3f,",
               o->label ? o->label : "", mode, o->version, o->qos, o->size, b->npubs,
               b->nsubs, o->topics, o->rate, o->duration_s);
        printf("\"sent\":%" PRIu64 ",\"sent_per_s\":%.1f,\"received\":%" PRIu64
               ",\"received_per_s\":%.1f,\"expected\":%" PRIu64 ",\"delivered\":%" PRIu64
               ",\"acked\":%" PRIu64 ",\"acked_per_s\":%.1f,\"loss\":%" PRIu64
               ",\"loss_pct\":%.4f,\"duplicates\":%" PRIu64 ",\"out_of_window\":%" PRIu64
               ",",
               s->sent_window, (double)s->sent_window / dur, s->recv_total,
               (double)s->recv_in_window / dur, s->expected, s->recv_measured_unique,
               s->acked_window, (double)s->acked_window / dur, loss,
               s->expected ? 100.0 * (double)loss / (double)s->expected : 0.0, s->dups,
               s->out_of_window);
        printf("\"lat_count\":%" PRIu64 ",\"lat_mean_us\":%.1f,\"lat_p50_us\":%.1f,"
               "\"lat_p90_us\":%.1f,\"lat_p99_us\":%.1f,\"lat_p999_us\":%.1f,"
               "\"lat_max_us\":%.1f,",
               s->lat.total, s->lat.total ? s->lat.sum_us / (double)s->lat.total : 0.0,
               hist_pct(&s->lat, 50), hist_pct(&s->lat, 90), hist_pct(&s->lat, 99),
               hist_pct(&s->lat, 99.9), (double)s->lat.max_ns / 1000.0);
        printf("\"ack_p50_us\":%.1f,\"ack_p99_us\":%.1f,\"ack_max_us\":%.1f,",
               hist_pct(&s->ack_lat, 50), hist_pct(&s->ack_lat, 99),
               (double)s->ack_lat.max_ns / 1000.0);
        printf("\"foreign\":%" PRIu64 ",", s->foreign);
        printf("\"connected\":%" PRIu64 ",\"connect_failures\":%" PRIu64
               ",\"connect_s\":%.4f,\"connect_per_s\":%.1f,\"session_present\":%" PRIu64
               ",\"drain_s\":%.4f,\"drain_per_s\":%.1f,\"rss_before_kb\":%ld,"
               "\"rss_after_kb\":%ld,\"rss_per_conn_bytes\":%.0f,\"protocol_errors\":"
               "%" PRIu64 ",\"interrupted\":%s}\n",
               s->connected, s->connect_failures, conn_s,
               conn_s > 0 ? (double)s->connected / conn_s : 0.0, s->session_present,
               drain_s, drain_s > 0 ? (double)s->recv_measured_unique / drain_s : 0.0,
               b->rss_before_kb, b->rss_after_kb,
               (b->rss_after_kb > 0 && s->connected > 0)
                   ? (double)(b->rss_after_kb - b->rss_before_kb) * 1024.0 /
                         (double)s->connected
                   : 0.0,
               s->protocol_errors, b->interrupted ? "true" : "false");
        return;
    }
    printf("mode %s, MQTT %s, QoS %d, %d B, %d pubs, %d subs, %d topics\n", mode,
           o->version == 5 ? "5" : "3.1.1", o->qos, o->size, b->npubs, b->nsubs,
           o->topics);
    printf("connected %" PRIu64 ", connect failures %" PRIu64 ", connect time %.3f s",
           s->connected, s->connect_failures, conn_s);
    if (conn_s > 0)
        printf(" (%.0f conn/s)", (double)s->connected / conn_s);
    printf("\n");
    if (o->mode == MODE_PUBSUB || o->mode == MODE_DRAIN) {
        printf("sent %" PRIu64 " (%.0f msg/s), received %" PRIu64
               " (%.0f msg/s in window)\n",
               s->sent_window, (double)s->sent_window / dur, s->recv_total,
               (double)s->recv_in_window / dur);
        if (o->qos > 0)
            printf("acked %" PRIu64 " (%.0f msg/s), ack p50 %.0f us, p99 %.0f us\n",
                   s->acked_window, (double)s->acked_window / dur,
                   hist_pct(&s->ack_lat, 50), hist_pct(&s->ack_lat, 99));
        printf("expected %" PRIu64 ", delivered %" PRIu64 ", loss %" PRIu64
               " (%.3f%%), duplicates %" PRIu64 "\n",
               s->expected, s->recv_measured_unique, loss,
               s->expected ? 100.0 * (double)loss / (double)s->expected : 0.0, s->dups);
    }
    if (o->mode == MODE_PUBSUB)
        printf("latency us: p50 %.0f, p90 %.0f, p99 %.0f, p99.9 %.0f, max %.0f (%" PRIu64
               " samples)\n",
               hist_pct(&s->lat, 50), hist_pct(&s->lat, 90), hist_pct(&s->lat, 99),
               hist_pct(&s->lat, 99.9), (double)s->lat.max_ns / 1000.0, s->lat.total);
    if (o->mode == MODE_DRAIN)
        printf("drain: %.3f s (%.0f msg/s), sessions present %" PRIu64 "\n", drain_s,
               drain_s > 0 ? (double)s->recv_measured_unique / drain_s : 0.0,
               s->session_present);
    if (o->mode == MODE_IDLE && o->rss_pid > 0)
        printf("broker RSS %ld kB -> %ld kB\n", b->rss_before_kb, b->rss_after_kb);
    if (s->protocol_errors)
        printf("protocol errors %" PRIu64 "\n", s->protocol_errors);
}

/* ---- command line
 * --------------------------------------------------------------------------------------
 */

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: tern-bench [options]\n"
        "  --host ADDR          broker IPv4 address (127.0.0.1)\n"
        "  --port N             broker port (1883)\n"
        "  --source-addrs A,B   bind connections round-robin to these local addresses\n"
        "  --pub-ports P,Q      publisher i connects to port list[i %% n] (--port)\n"
        "  --sub-ports P,Q      subscriber j connects to port list[j %% n] (--port)\n"
        "  --pubs N             publishers (1)\n"
        "  --subs N             subscribers (1)\n"
        "  --topics N           publisher i publishes to PREFIX/<i %% N> (1)\n"
        "  --topic-prefix P     topic prefix, e.g. one per run so that persistent\n"
        "                       sessions of earlier runs do not match (bench/t)\n"
        "  --sub-filter F       subscribers use F instead of PREFIX/<j %% topics>\n"
        "  --qos 0|1|2          (0)\n"
        "  --size BYTES         payload size, >= 16 (16)\n"
        "  --rate N             total messages/s, 0 = as fast as possible (0)\n"
        "  --window N           in-flight QoS>0 messages per publisher (64)\n"
        "  --max-unsent BYTES   cap on unsent bytes per connection (65536)\n"
        "  --qos0-window N      QoS 0: deliveries per publisher our subscribers have\n"
        "                       not seen yet, at least 2 x fan-out (1000, 0 = no\n"
        "                       bound but --max-unsent)\n"
        "  --duration S         measured seconds (5)\n"
        "  --warmup S           unmeasured seconds before (1)\n"
        "  --grace S            wait for stragglers after (2)\n"
        "  --connect-timeout S  bound on each connection phase (30)\n"
        "  --clean 0|1          clean session / clean start (1)\n"
        "  --client-prefix P    client id prefix (tb<pid>-)\n"
        "  --mqtt-version 4|5   (4)\n"
        "  --keepalive S        (60)\n"
        "  --concurrency N      handshakes in progress at once (100)\n"
        "  --idle N             open N idle connections, hold for --duration\n"
        "  --rss-pid PID        with --idle: sample the broker's VmRSS before/after\n"
        "  --idle-subscribe     with --idle: connection i subscribes to PREFIX/<i>\n"
        "                       (--topic-prefix, --qos) before it is counted\n"
        "  --idle-offline       with --idle-subscribe: then disconnects, so N\n"
        "                       sessions (--clean 0) stay offline with only\n"
        "                       --concurrency connections open at a time\n"
        "  --connect-rate N     connection storm: N connections, report CONNACK/s\n"
        "  --drain              persistent sessions: --subs offline, --pubs publish\n"
        "                       --messages each (QoS>=1), reconnect, time the drain\n"
        "  --messages K         drain: messages per publisher (100)\n"
        "  --sessions create    --subs persistent sessions subscribe to PREFIX/<j %% "
        "topics>\n"
        "                       and disconnect; one publisher per topic then publishes\n"
        "                       --messages (10) QoS 1 messages (sequences 0..K-1)\n"
        "  --sessions resume    the same --subs sessions (same --client-prefix) "
        "reconnect,\n"
        "                       expect session present and --expect messages, "
        "disconnect\n"
        "  --expect K           resume: messages per session (--messages)\n"
        "  --hold               resume: stay connected; when dropped, reconnect to\n"
        "                       --failover-ports and time the storm (--duration bounds "
        "the hold)\n"
        "  --no-ack             resume --hold: no PUBACK until a fail-over\n"
        "  --failover-ports P,Q resume --hold: where dropped sessions reconnect\n"
        "  --retries N          resume: reconnects of a failed session (20)\n"
        "  --tls CAFILE         over TLS, the broker's certificate checked against "
        "CAFILE\n"
        "  --tls-1.2            with --tls: at most TLS 1.2\n"
        "  --ws PATH            over WebSockets (ws://HOST:PORT/PATH, subprotocol mqtt)\n"
        "  --label TEXT         copied into the JSON output\n"
        "  --json               print results as one JSON object\n"
        "  --help\n");
}

static void bad_usage(const char *why, const char *arg)
{
    fprintf(stderr, "tern-bench: %s%s%s\n", why, arg ? ": " : "", arg ? arg : "");
    usage(stderr);
    exit(2);
}

static long parse_long(const char *s, long lo, long hi, const char *name)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi)
        bad_usage("bad value for", name);
    return v;
}

static double parse_double(const char *s, double lo, double hi, const char *name)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || end == s || !(v >= lo && v <= hi))
        bad_usage("bad value for", name);
    return v;
}

static void parse_sources(struct opts *o, const char *arg)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", arg);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (o->nsrc == MAX_SRC_ADDRS)
            bad_usage("too many source addresses", NULL);
        if (uv_ip4_addr(tok, 0, &o->src[o->nsrc]) != 0)
            bad_usage("bad source address", tok);
        o->nsrc++;
    }
    if (o->nsrc == 0)
        bad_usage("empty --source-addrs", NULL);
}

static int parse_ports(int *ports, const char *arg, const char *name)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", arg);
    int n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (n == MAX_PORTS)
            bad_usage("too many ports in", name);
        ports[n++] = (int)parse_long(tok, 1, 65535, name);
    }
    if (n == 0)
        bad_usage("empty", name);
    return n;
}

static void parse_args(struct opts *o, int argc, char **argv)
{
    enum {
        O_HOST = 256,
        O_PORT,
        O_SRC,
        O_PUB_PORTS,
        O_SUB_PORTS,
        O_PUBS,
        O_SUBS,
        O_TOPICS,
        O_FILTER,
        O_TPREFIX,
        O_QOS,
        O_SIZE,
        O_RATE,
        O_WINDOW,
        O_UNSENT,
        O_Q0W,
        O_DUR,
        O_WARM,
        O_GRACE,
        O_CTO,
        O_CLEAN,
        O_PREFIX,
        O_VER,
        O_KA,
        O_CONC,
        O_IDLE,
        O_RSS,
        O_IDLE_SUB,
        O_IDLE_OFF,
        O_STORM,
        O_DRAIN,
        O_MSGS,
        O_LABEL,
        O_JSON,
        O_TLS,
        O_TLS12,
        O_WS,
        O_SESS,
        O_EXPECT,
        O_HOLD,
        O_NOACK,
        O_FAILOVER,
        O_RETRIES,
        O_HELP,
    };
    static const struct option lo[] = {
        {"host", required_argument, 0, O_HOST},
        {"port", required_argument, 0, O_PORT},
        {"source-addrs", required_argument, 0, O_SRC},
        {"pub-ports", required_argument, 0, O_PUB_PORTS},
        {"sub-ports", required_argument, 0, O_SUB_PORTS},
        {"pubs", required_argument, 0, O_PUBS},
        {"subs", required_argument, 0, O_SUBS},
        {"topics", required_argument, 0, O_TOPICS},
        {"sub-filter", required_argument, 0, O_FILTER},
        {"topic-prefix", required_argument, 0, O_TPREFIX},
        {"qos", required_argument, 0, O_QOS},
        {"size", required_argument, 0, O_SIZE},
        {"rate", required_argument, 0, O_RATE},
        {"window", required_argument, 0, O_WINDOW},
        {"max-unsent", required_argument, 0, O_UNSENT},
        {"qos0-window", required_argument, 0, O_Q0W},
        {"duration", required_argument, 0, O_DUR},
        {"warmup", required_argument, 0, O_WARM},
        {"grace", required_argument, 0, O_GRACE},
        {"connect-timeout", required_argument, 0, O_CTO},
        {"clean", required_argument, 0, O_CLEAN},
        {"client-prefix", required_argument, 0, O_PREFIX},
        {"mqtt-version", required_argument, 0, O_VER},
        {"keepalive", required_argument, 0, O_KA},
        {"concurrency", required_argument, 0, O_CONC},
        {"idle", required_argument, 0, O_IDLE},
        {"rss-pid", required_argument, 0, O_RSS},
        {"idle-subscribe", no_argument, 0, O_IDLE_SUB},
        {"idle-offline", no_argument, 0, O_IDLE_OFF},
        {"connect-rate", required_argument, 0, O_STORM},
        {"drain", no_argument, 0, O_DRAIN},
        {"messages", required_argument, 0, O_MSGS},
        {"label", required_argument, 0, O_LABEL},
        {"json", no_argument, 0, O_JSON},
        {"tls", required_argument, 0, O_TLS},
        {"tls-1.2", no_argument, 0, O_TLS12},
        {"ws", required_argument, 0, O_WS},
        {"sessions", required_argument, 0, O_SESS},
        {"expect", required_argument, 0, O_EXPECT},
        {"hold", no_argument, 0, O_HOLD},
        {"no-ack", no_argument, 0, O_NOACK},
        {"failover-ports", required_argument, 0, O_FAILOVER},
        {"retries", required_argument, 0, O_RETRIES},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    *o = (struct opts){
        .host = "127.0.0.1",
        .port = 1883,
        .pubs = 1,
        .subs = 1,
        .topics = 1,
        .topic_prefix = "bench/t",
        .size = 16,
        .window = 64,
        .qos0_window = 1000,
        .max_unsent = 65536,
        .duration_s = 5,
        .warmup_s = 1,
        .grace_s = 2,
        .connect_timeout_s = 30,
        .clean = 1,
        .version = TERN_MQTT_311,
        .keepalive_s = 60,
        .concurrency = 100,
        .messages = 100,
        .retries = 20,
    };
    snprintf(o->prefix, sizeof o->prefix, "tb%ld-", (long)getpid());
    bool pubs_set = false, subs_set = false, msgs_set = false, clean_set = false,
         expect_set = false;
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case O_HOST:
            o->host = optarg;
            break;
        case O_PORT:
            o->port = (int)parse_long(optarg, 1, 65535, "--port");
            break;
        case O_PUB_PORTS:
            o->npub_ports = parse_ports(o->pub_ports, optarg, "--pub-ports");
            break;
        case O_SUB_PORTS:
            o->nsub_ports = parse_ports(o->sub_ports, optarg, "--sub-ports");
            break;
        case O_SRC:
            parse_sources(o, optarg);
            break;
        case O_PUBS:
            o->pubs = (int)parse_long(optarg, 0, 100000, "--pubs");
            pubs_set = true;
            break;
        case O_SUBS:
            o->subs = (int)parse_long(optarg, 0, 2000000, "--subs");
            subs_set = true;
            break;
        case O_TOPICS:
            o->topics = (int)parse_long(optarg, 1, 1000000, "--topics");
            break;
        case O_TPREFIX:
            /* Room for "/<index>" in TOPIC_MAX; no wildcards in a topic name. */
            if (strlen(optarg) > TOPIC_MAX - 12 || !*optarg || strpbrk(optarg, "+#"))
                bad_usage("bad --topic-prefix", optarg);
            o->topic_prefix = optarg;
            break;
        case O_FILTER:
            if (strlen(optarg) >= TOPIC_MAX || !*optarg)
                bad_usage("bad --sub-filter", optarg);
            o->sub_filter = optarg;
            break;
        case O_QOS:
            o->qos = (int)parse_long(optarg, 0, 2, "--qos");
            break;
        case O_SIZE:
            o->size = (int)parse_long(optarg, HDR_LEN, 16 * 1024 * 1024, "--size");
            break;
        case O_RATE:
            o->rate = parse_double(optarg, 0, 1e9, "--rate");
            break;
        case O_WINDOW:
            o->window = (int)parse_long(optarg, 1, 32768, "--window");
            break;
        case O_UNSENT:
            o->max_unsent = (size_t)parse_long(optarg, 1024, 1L << 30, "--max-unsent");
            break;
        case O_Q0W:
            o->qos0_window = (int)parse_long(optarg, 0, 1 << 30, "--qos0-window");
            break;
        case O_DUR:
            o->duration_s = parse_double(optarg, 0, 86400, "--duration");
            break;
        case O_WARM:
            o->warmup_s = parse_double(optarg, 0, 3600, "--warmup");
            break;
        case O_GRACE:
            o->grace_s = parse_double(optarg, 0, 3600, "--grace");
            break;
        case O_CTO:
            o->connect_timeout_s = parse_double(optarg, 0.1, 3600, "--connect-timeout");
            break;
        case O_CLEAN:
            o->clean = (int)parse_long(optarg, 0, 1, "--clean");
            clean_set = true;
            break;
        case O_PREFIX:
            if (strlen(optarg) >= 48)
                bad_usage("--client-prefix too long", optarg);
            snprintf(o->prefix, sizeof o->prefix, "%s", optarg);
            break;
        case O_VER: {
            long v = parse_long(optarg, 4, 5, "--mqtt-version");
            o->version = v == 5 ? TERN_MQTT_5 : TERN_MQTT_311;
            break;
        }
        case O_KA:
            o->keepalive_s = (int)parse_long(optarg, 0, 65535, "--keepalive");
            break;
        case O_CONC:
            o->concurrency = (int)parse_long(optarg, 1, 100000, "--concurrency");
            break;
        case O_IDLE:
            o->mode = MODE_IDLE;
            o->nconns = (int)parse_long(optarg, 1, 1000000, "--idle");
            break;
        case O_RSS:
            o->rss_pid = (int)parse_long(optarg, 1, 1L << 30, "--rss-pid");
            break;
        case O_IDLE_SUB:
            o->idle_sub = 1;
            break;
        case O_IDLE_OFF:
            o->idle_sub = o->idle_off = 1;
            break;
        case O_STORM:
            o->mode = MODE_STORM;
            o->nconns = (int)parse_long(optarg, 1, 1000000, "--connect-rate");
            break;
        case O_DRAIN:
            o->mode = MODE_DRAIN;
            break;
        case O_MSGS:
            o->messages = (int)parse_long(optarg, 1, 100000000, "--messages");
            msgs_set = true;
            break;
        case O_LABEL:
            o->label = optarg;
            break;
        case O_JSON:
            o->json = 1;
            break;
        case O_TLS:
            o->tls_ca = optarg;
            break;
        case O_TLS12:
            o->tls12 = 1;
            break;
        case O_WS:
            o->ws_path = optarg;
            break;
        case O_SESS:
            if (strcmp(optarg, "create") == 0)
                o->mode = MODE_SESS_CREATE;
            else if (strcmp(optarg, "resume") == 0)
                o->mode = MODE_SESS_RESUME;
            else
                bad_usage("--sessions: create or resume", optarg);
            break;
        case O_EXPECT:
            o->expect = (int)parse_long(optarg, 0, 32, "--expect");
            expect_set = true;
            break;
        case O_HOLD:
            o->hold = 1;
            break;
        case O_NOACK:
            o->no_ack = 1;
            break;
        case O_FAILOVER:
            o->nfailover_ports =
                parse_ports(o->failover_ports, optarg, "--failover-ports");
            break;
        case O_RETRIES:
            o->retries = (int)parse_long(optarg, 0, 10000, "--retries");
            break;
        case O_HELP:
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            exit(2);
        }
    }
    if (optind < argc)
        bad_usage("unexpected argument", argv[optind]);
    if (o->mode == MODE_PUBSUB && (o->pubs < 1 || o->subs < 1))
        bad_usage("need at least one publisher and one subscriber", NULL);
    if (o->mode == MODE_DRAIN) {
        if (o->qos == 0)
            o->qos = 1; /* offline queues only hold QoS > 0 */
        if (!subs_set)
            o->subs = 100;
        if (!pubs_set)
            o->pubs = 1;
        if (o->pubs < 1 || o->subs < 1)
            bad_usage("--drain needs publishers and subscribers", NULL);
    }
    if (o->mode == MODE_DRAIN && o->clean)
        o->clean = 0; /* persistent sessions are the point */
    if (o->mode == MODE_SESS_CREATE || o->mode == MODE_SESS_RESUME) {
        if (!subs_set || o->subs < 1)
            bad_usage("--sessions needs --subs N", NULL);
        if (!msgs_set)
            o->messages = 10;
        if (o->messages > 32)
            bad_usage("--sessions: at most 32 --messages", NULL);
        if (!clean_set || o->mode == MODE_SESS_CREATE)
            o->clean = 0;
        if (o->qos == 0)
            o->qos = 1;
        if (o->mode == MODE_SESS_CREATE) {
            o->pubs = o->topics; /* one publisher per topic: sequences 0..K-1 */
        } else {
            o->pubs = 0;
            if (!expect_set)
                o->expect = o->messages;
        }
    }
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void init_conns(struct bench *b)
{
    const struct opts *o = &b->o;
    if (o->mode == MODE_IDLE || o->mode == MODE_STORM) {
        b->nconns = o->nconns;
        b->conns = xcalloc((size_t)b->nconns, sizeof *b->conns);
        for (int i = 0; i < b->nconns; i++) {
            b->conns[i] =
                (struct conn){.b = b, .role = ROLE_IDLE, .index = i, .clean = o->clean};
            if (o->idle_sub)
                snprintf(b->conns[i].filter, sizeof b->conns[i].filter, "%s/%d",
                         o->topic_prefix, i);
        }
        b->subs = b->conns; /* scheduled like subscribers */
        return;
    }
    b->npubs = o->pubs;
    b->nsubs = o->subs;
    b->nconns = b->npubs + b->nsubs;
    b->conns = xcalloc((size_t)b->nconns, sizeof *b->conns);
    b->subs = b->conns;
    b->pubs = b->conns + b->nsubs;
    for (int j = 0; j < b->nsubs; j++) {
        struct conn *c = &b->subs[j];
        *c = (struct conn){.b = b, .role = ROLE_SUB, .index = j, .clean = o->clean};
        if (o->sub_filter)
            snprintf(c->filter, sizeof c->filter, "%s", o->sub_filter);
        else
            snprintf(c->filter, sizeof c->filter, "%s/%d", o->topic_prefix,
                     j % o->topics);
    }
    for (int i = 0; i < b->npubs; i++) {
        struct conn *c = &b->pubs[i];
        /* Publishers never need a session. */
        *c = (struct conn){.b = b, .role = ROLE_PUB, .index = i, .clean = 1};
        snprintf(c->topic, sizeof c->topic, "%s/%d", o->topic_prefix, i % o->topics);
        if (o->qos > 0) {
            c->free_pids = xcalloc((size_t)o->window, sizeof *c->free_pids);
            c->pid_sent_ns = xcalloc((size_t)o->window + 1, sizeof *c->pid_sent_ns);
            c->pid_measured = xcalloc((size_t)o->window + 1, 1);
            for (int k = 0; k < o->window; k++)
                c->free_pids[k] = (uint16_t)(o->window - k);
            c->nfree = (uint32_t)o->window;
        }
    }
    b->match_count = xcalloc((size_t)o->topics, sizeof *b->match_count);
}

static void free_conns(struct bench *b)
{
    for (int i = 0; i < b->nconns; i++) {
        struct conn *c = &b->conns[i];
        free(c->rbuf);
        free(c->w);
        free(c->free_pids);
        free(c->pid_sent_ns);
        free(c->pid_measured);
        free(c->seen);
    }
    free(b->conns);
    free(b->match_count);
    free(b->dirty);
    free(b->payload);
    free(b->retry_q);
}

int main(int argc, char **argv)
{
    static struct bench bench; /* large histograms: keep them off the stack */
    struct bench *b = &bench;
    parse_args(&b->o, argc, argv);
    b->t_start_ns = now_ns();
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    if (uv_ip4_addr(b->o.host, b->o.port, &b->dst) != 0)
        bad_usage("bad --host", b->o.host);

    if (b->o.tls_ca) {
        char errmsg[TERN_ERRMSG_SIZE];
        struct tern_tls_opts to = {.ca_file = b->o.tls_ca, .max_tls_1_2 = b->o.tls12};
        if (tern_tls_ctx_new(&b->tls, &to, errmsg) != TERN_OK)
            die("--tls: %s", errmsg);
        b->tls_in = xcalloc(TLS_CHUNK, 1);
        b->tls_out = xcalloc(TLS_CHUNK, 1);
    }
    if (b->o.ws_path) {
        if (b->o.tls_ca)
            bad_usage("--ws with --tls (wss) is not supported", b->o.ws_path);
        b->ws = (struct tern_ws_opts){.handshake_bytes_max = 8192,
                                      .frame_bytes_max = (uint64_t)MAX_PACKET};
        b->tls_in = xcalloc(TLS_CHUNK, 1);
        b->tls_out = xcalloc(TLS_CHUNK, 1);
    }
    init_conns(b);
    if (b->o.mode == MODE_SESS_RESUME || b->o.mode == MODE_SESS_CREATE) {
        b->retry_cap = b->nconns;
        b->retry_q = xcalloc((size_t)b->retry_cap, sizeof *b->retry_q);
    }
    b->dirty = xcalloc((size_t)b->nconns, sizeof *b->dirty);
    b->payload = xcalloc((size_t)b->o.size, 1);
    b->rss_before_kb = b->rss_after_kb = -1;
    if (b->o.rss_pid > 0)
        b->rss_before_kb = read_rss_kb(b->o.rss_pid);

    if (uv_loop_init(&b->loop) != 0)
        die("uv_loop_init failed");
    uv_prepare_init(&b->loop, &b->prepare);
    uv_check_init(&b->loop, &b->check);
    uv_timer_init(&b->loop, &b->tick);
    uv_timer_init(&b->loop, &b->watchdog);
    uv_signal_init(&b->loop, &b->sigint);
    b->prepare.data = b->check.data = b->tick.data = b->watchdog.data = b;
    b->sigint.data = b;
    uv_prepare_start(&b->prepare, on_prepare);
    uv_check_start(&b->check, on_check);
    /* 1 ms pacing when rate limited; phase changes alone need less. */
    uint64_t tick_ms = b->o.rate > 0 ? 1 : 5;
    uv_timer_start(&b->tick, on_tick, tick_ms, tick_ms);
    uv_signal_start(&b->sigint, on_sigint, SIGINT);
    /* Every phase is bounded; the watchdog bounds their sum plus closing. */
    double bound_s = 3 * b->o.connect_timeout_s + b->o.warmup_s + 2 * b->o.duration_s +
                     2 * b->o.grace_s + 10;
    uv_timer_start(&b->watchdog, on_watchdog, (uint64_t)(bound_s * 1000), 2000);

    switch (b->o.mode) {
    case MODE_PUBSUB:
        set_phase(b, PH_SETUP_SUBS);
        sched_begin(b, b->subs, b->nsubs);
        break;
    case MODE_IDLE:
    case MODE_STORM:
        set_phase(b, PH_SETUP_SUBS);
        sched_begin(b, b->conns, b->nconns);
        break;
    case MODE_DRAIN:
    case MODE_SESS_CREATE:
        set_phase(b, PH_DRAIN_OFFLINE);
        sched_begin(b, b->subs, b->nsubs);
        break;
    case MODE_SESS_RESUME:
        set_phase(b, PH_SESS_RESUME);
        sched_begin(b, b->subs, b->nsubs);
        break;
    }
    uv_run(&b->loop, UV_RUN_DEFAULT);
    report(b);
    fflush(stdout);
    int rc = uv_loop_close(&b->loop);
    if (rc != 0)
        fprintf(stderr, "tern-bench: loop not empty at exit: %s\n", uv_strerror(rc));
    bool ok = b->st.connected > 0;
    free_conns(b);
    tern_tls_ctx_free(b->tls);
    free(b->tls_in);
    free(b->tls_out);
    return ok ? 0 : 1;
}
