/* The node: listener, the two FSMs, the flush phase and the tick timer. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "node.h"
#include "tern/log.h"
#include "tern/tls.h"

#define TICK_MS 1000
#define CONN_SWEEP_MS 250
/* A command carries a PUBLISH's topic, payload and properties (all within
 * max_packet_size) plus fixed fields of its own: this covers those. */
#define PEER_FRAME_SLACK_BYTES 65536

/* Prepare phase: write out everything this loop turn produced, once per
 * connection. */
/* How long the last loop iteration worked (wall time minus time waiting in
 * poll): a long one delays every client and Raft's heartbeats alike. */
static void measure_loop(struct tern_node *n)
{
    static const uint64_t bounds_us[] = TERN_LOOP_BUCKETS_US;
    uint64_t now = uv_hrtime(), idle = uv_metrics_idle_time(n->loop);
    if (n->loop_last_ns) {
        uint64_t wall = now - n->loop_last_ns, waited = idle - n->loop_last_idle_ns;
        uint64_t busy_us = (wall > waited ? wall - waited : 0) / 1000;
        size_t i = 0;
        while (i < sizeof(bounds_us) / sizeof(bounds_us[0]) && busy_us > bounds_us[i])
            i++;
        n->stats.loop_busy[i]++;
        n->stats.loop_busy_sum_us += busy_us;
        if (busy_us > n->stats.loop_busy_max_us)
            n->stats.loop_busy_max_us = busy_us;
    }
    n->loop_last_ns = now;
    n->loop_last_idle_ns = idle;
}

static void on_limits_done(void *ctx, int status, const struct tern_fsm_result *res)
{
    struct tern_node *n = ctx;
    if (status == TERN_OK && res->status != TERN_OK) {
        /* Refused (cannot happen with a validated configuration): do not retry
         * every turn; limits_proposed stays set. */
        TERN_LOGE("cluster limits from this node's configuration refused: %s",
                  tern_strerror(res->status));
        return;
    }
    n->limits_proposed = false; /* lost with a leader change: the next turn retries */
    if (status == TERN_OK)
        TERN_LOGI("cluster limits set from this node's configuration");
}

/* The bounds of the replicated state (queue_max, inflight_max, ...) decide what
 * it holds, so they are replicated too: every replica applies the LIMITS
 * commands of the log, never its own configuration. A leader whose configuration
 * differs from the replicated limits proposes its own (the first leader of a
 * cluster whose configuration is not the defaults, too) in its first loop turn
 * as leader; every node whose configuration differs says so, once per change.
 * Commands that reach the log before the LIMITS entry apply with the limits
 * before it, on every replica alike. Called each loop turn: the common case,
 * equal limits, is a few compares. */
static void limits_check(struct tern_node *n)
{
    const struct tern_fsm_limits *repl = tern_fsm_limits(tern_cluster_fsm(n->cluster));
    if (tern_fsm_limits_equal(repl, &n->cfg.limits)) {
        n->limits_warned = false;
        return;
    }
    struct tern_cluster_status st;
    tern_cluster_status(n->cluster, &st);
    bool leader = st.state == 3;
    if (!leader &&
        (!n->limits_warned || !tern_fsm_limits_equal(repl, &n->limits_warned_of))) {
        char diff[512];
        tern_fsm_limits_diff(&n->cfg.limits, repl, diff, sizeof(diff));
        TERN_LOGW("config: limits differ from the cluster's, which apply here (the "
                  "leader's configuration): %s",
                  diff);
        n->limits_warned = true;
        n->limits_warned_of = *repl;
    }
    if (!leader || n->limits_proposed)
        return;
    struct tern_cmd cmd;
    tern_fsm_limits_cmd(&cmd, &n->cfg.limits);
    cmd.now_ms = tern_now_ms();
    if (tern_cluster_propose(n->cluster, &cmd, on_limits_done, n) == TERN_OK)
        n->limits_proposed = true;
}

static void on_flush(uv_prepare_t *h)
{
    struct tern_node *n = h->data;
    measure_loop(n);
    tern_conn_open_waiting(n); /* its SESSION_OPEN goes out in this turn's flush */
    tern_flow_check(n);        /* before the flush: publishers read again may answer */
    /* Forwards (gathered in the idle phase and the last turn's I/O callbacks)
     * before the connections' output: a clean copy of a committed PUBLISH is in
     * the kernel before the publisher's ack that follows it, so a node killed
     * right after the ack has not kept it back (handle_publish.c delivers both
     * from the commit). */
    tern_cluster_flush_links(n->cluster);
    /* Flushing can close connections, which can mark others dirty: loop on the
     * count, not a snapshot of it. */
    for (size_t i = 0; i < n->dirty_count; i++)
        tern_conn_flush(n->dirty[i]);
    n->dirty_count = 0;
    tern_cluster_flush_links(n->cluster); /* whatever closing connections queued */
    tern_conn_resume_paused(n);
    if (!n->stopping) {
        limits_check(n);        /* each turn: a new leader proposes its limits at once */
        tern_identity_check(n); /* likewise the cluster id; learns it when joined */
    }
}

static void on_tick_done(void *ctx, int status, const struct tern_fsm_result *res)
{
    (void)status;
    (void)res;
    struct tern_node *n = ctx;
    n->tick_proposed = false;
}

/* Time-driven changes (session expiry, delayed wills) are commands too, so every
 * replica applies them at the same point of the log. */
static void on_tick(uv_timer_t *t)
{
    struct tern_node *n = t->data;
    struct tern_fsm *repl = tern_cluster_fsm(n->cluster);
    uint64_t now = tern_now_ms();
    if (n->tick_proposed || tern_fsm_next_deadline(repl) > now)
        return;
    struct tern_cmd cmd = {.type = TERN_CMD_TICK, .now_ms = now};
    if (tern_cluster_propose(n->cluster, &cmd, on_tick_done, n) == TERN_OK)
        n->tick_proposed = true;
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct tern_node *n = h->data;
    TERN_LOGI("signal %d: shutting down", signum);
    tern_node_stop(n);
}

/* SIGHUP reloads what can change at run time (node/reload.c): log level, log
 * file, the TLS files; without a handler it would end the process. */
static void on_hup(uv_signal_t *h, int signum)
{
    (void)signum;
    uint32_t reloaded;
    char errmsg[TERN_ERRMSG_SIZE] = "";
    TERN_LOGI("SIGHUP: reloading");
    tern_node_reload(h->data, &reloaded, errmsg); /* logs the outcome */
    tern_access_reload(h->data);                  /* password, ACL, token: likewise */
}

/* Another node forwarded a message for this node's clean sessions; a queue it
 * leaves backlogged holds its publisher there (flow.c, flow_park.c). */
static void on_forward(void *ctx, uint32_t from, const struct tern_cmd *cmd)
{
    tern_flow_forward(ctx, from, cmd);
}

static void on_flow(void *ctx, uint32_t from, bool hold, const uint8_t *client_id,
                    size_t len)
{
    tern_flow_peer_recv(ctx, from, hold, client_id, len);
}

/* A node that cannot commit (no leader, or no link to it) must not hold clients
 * whose work it cannot make durable: after a grace period it disconnects them
 * (MQTT 5: 0x88 server unavailable) so they fail over to another node, and it
 * refuses new ones until the cluster is back. */
static void on_quorum_timer(uv_timer_t *t)
{
    struct tern_node *n = t->data;
    uint64_t now = tern_mono_ms();
    /* Not cut off, only slow (a leader being elected, or a peer link to it
     * reconnecting, on a lossy network): the clients would only reconnect
     * here, across the same loss. */
    if (!tern_cluster_ready(n->cluster) && tern_cluster_reachable(n->cluster)) {
        n->unready_since_ms = 0;
        return;
    }
    if (tern_cluster_ready(n->cluster)) {
        if (n->unready_since_ms && n->was_ready)
            TERN_LOGI("cluster available again");
        n->unready_since_ms = 0;
        n->was_ready = true;
        return;
    }
    if (!n->unready_since_ms) {
        n->unready_since_ms = now;
        return;
    }
    uint64_t grace = (uint64_t)n->cfg.raft_election_timeout_ms * 4;
    if (now - n->unready_since_ms < grace)
        return;
    for (struct tern_conn *c = n->conns; c; c = c->next)
        if (c->state == TERN_CONN_ACTIVE || c->state == TERN_CONN_CONNECTING ||
            c->state == TERN_CONN_WAITING)
            tern_conn_close(c, TERN_RC_SERVER_UNAVAILABLE,
                            "cluster unavailable (no quorum)");
}

/* In-session retry: a connection that has had messages in flight and no
 * acknowledgement for retry_interval_s gets them again with DUP. Off by default:
 * MQTT 5 forbids it, and resume re-sends at once anyway. */
static void on_retry_timer(uv_timer_t *t)
{
    struct tern_node *n = t->data;
    uint32_t now_s = (uint32_t)(tern_mono_ms() / 1000), every = n->cfg.retry_interval_s;
    for (struct tern_conn *c = n->conns; c; c = c->next) {
        if (c->state != TERN_CONN_ACTIVE || now_s - c->retry_quiet_since_s < every)
            continue;
        struct tern_fsm_session *s = tern_session_get(c);
        if (!s || tern_fsm_session_inflight(s) == 0)
            continue;
        c->retry_quiet_since_s = now_s;
        tern_fsm_session_resend(tern_session_fsm(c), s);
    }
}

static void on_conn_timer(uv_timer_t *t)
{
    tern_conn_sweep(t->data, tern_mono_ms());
    tern_flow_check(t->data); /* slow subscribers time out on an idle loop too */
}

int tern_node_init(struct tern_node *n, uv_loop_t *loop, const struct tern_config *cfg,
                   char *errmsg)
{
    memset(n, 0, sizeof(*n));
    n->loop = loop;
    n->cfg = *cfg;
    tern_clients_init(&n->clients);
    n->rshared = malloc(sizeof(*n->rshared) + TERN_READ_CHUNK);
    if (!n->rshared) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "cannot allocate the read buffer");
        return TERN_ENOMEM;
    }
    n->rshared->cap = TERN_READ_CHUNK;
    for (uint32_t i = 0; i < cfg->listener_count; i++)
        if (cfg->listeners[i].type != TERN_LISTENER_MQTT && !n->tls_in) {
            n->tls_in = malloc(TERN_READ_CHUNK);
            n->tls_out = malloc(TERN_READ_CHUNK);
            n->ws_in = malloc(TERN_READ_CHUNK);
            if (!n->tls_in || !n->tls_out || !n->ws_in) {
                snprintf(errmsg, TERN_ERRMSG_SIZE, "cannot allocate the TLS buffers");
                return TERN_ENOMEM;
            }
        }

    struct tern_fsm_observer lobs = tern_session_observer(n, false);
    struct tern_fsm_limits llim = cfg->limits;
    llim.retained_max = 0; /* retained messages live in the replicated FSM only */
    llim.retained_bytes_max = 0;
    llim.sessions_max = cfg->max_connections + 1;
    n->local = tern_fsm_new(cfg->node_id, &llim, &lobs);
    if (!n->local) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "cannot allocate the local state machine");
        return TERN_ENOMEM;
    }
    struct tern_fsm_limits repl_limits;
    tern_fsm_limits_default(&repl_limits);
    struct tern_cluster_config cc = {
        .node_id = cfg->node_id,
        .data_dir = n->cfg.data_dir,
        /* The replicated FSM starts with the defaults on every node; the limits
         * in force come from the log (limits_check). */
        .limits = repl_limits,
        .max_batch_bytes = cfg->max_batch_bytes,
        .peer_frame_bytes_max = (uint64_t)(cfg->max_batch_bytes > cfg->max_packet_size
                                               ? cfg->max_batch_bytes
                                               : cfg->max_packet_size) +
                                PEER_FRAME_SLACK_BYTES,
        .member_count = cfg->member_count,
        .raft_address = n->cfg.raft_address,
        .election_timeout_ms = cfg->raft_election_timeout_ms,
        .heartbeat_timeout_ms = cfg->raft_heartbeat_timeout_ms,
        .snapshot_threshold = cfg->raft_snapshot_threshold,
        .snapshot_trailing = cfg->raft_snapshot_trailing,
        .snapshot_bytes = cfg->raft_snapshot_bytes,
        .segment_bytes = cfg->raft_segment_bytes,
        .snapshot_fork = cfg->raft_snapshot_fork,
        .entry_compression = cfg->raft_entry_compression,
        .join = cfg->join,
        .tls_cert_file = n->cfg.cluster_tls.cert_file,
        .tls_key_file = n->cfg.cluster_tls.key_file,
        .tls_ca_file = n->cfg.cluster_tls.ca_file,
        .tls_crl_file = n->cfg.cluster_tls.crl_file,
        .on_forward = on_forward,
        .on_flow = on_flow,
        .forward_ctx = n,
    };
    memcpy(cc.members, cfg->members, sizeof(cc.members));
    struct tern_fsm_observer robs = tern_session_observer(n, true);
    robs.shared_route = tern_routes_on_shared; /* ctx is n, as for the others */
    int rv = tern_cluster_new(&n->cluster, loop, &cc, &robs, errmsg);
    if (rv != TERN_OK)
        return rv;
    tern_fsm_set_retained_source(n->local, tern_cluster_fsm(n->cluster));
    return TERN_OK;
}

int tern_node_start(struct tern_node *n, struct tern_tls_ctx *tls[TERN_LISTENERS_MAX],
                    char *errmsg)
{
    /* Before the listeners: a password file that does not parse stops the start. */
    int rv = tern_access_init(n, errmsg);
    if (rv != TERN_OK)
        return rv;
    struct tern_tls_ctx *admin_tls = NULL; /* checked here, loaded again by admin.c */
    rv = tern_admin_tls_load(&n->cfg, &admin_tls, errmsg);
    if (rv != TERN_OK)
        return rv;
    tern_tls_ctx_free(admin_tls);
    rv = tern_listeners_start(n, tls, errmsg);
    if (rv != TERN_OK) {
        tern_listeners_stop(n);
        return rv;
    }
    uv_prepare_init(n->loop, &n->flush);
    n->flush.data = n;
    uv_prepare_start(&n->flush, on_flush);
    uv_timer_init(n->loop, &n->tick_timer);
    n->tick_timer.data = n;
    uv_timer_start(&n->tick_timer, on_tick, TICK_MS, TICK_MS);
    uv_timer_init(n->loop, &n->quorum_timer);
    n->quorum_timer.data = n;
    uv_timer_start(&n->quorum_timer, on_quorum_timer, 100, 100);
    uv_timer_init(n->loop, &n->retry_timer);
    n->retry_timer.data = n;
    if (n->cfg.retry_interval_s)
        uv_timer_start(&n->retry_timer, on_retry_timer, 1000, 1000);
    uv_timer_init(n->loop, &n->conn_timer);
    n->conn_timer.data = n;
    /* Deadlines are checked this often: keepalive (1.5 x, at least 1.5 s) and
     * connect_timeout_ms fire at most this much late. */
    uint64_t sweep_ms = n->cfg.connect_timeout_ms < 1000 ? 50 : CONN_SWEEP_MS;
    uv_timer_start(&n->conn_timer, on_conn_timer, sweep_ms, sweep_ms);
    uv_signal_init(n->loop, &n->sig_int);
    uv_signal_init(n->loop, &n->sig_term);
    uv_signal_init(n->loop, &n->sig_hup);
    n->sig_int.data = n->sig_term.data = n->sig_hup.data = n;
    uv_signal_start(&n->sig_int, on_signal, SIGINT);
    uv_signal_start(&n->sig_term, on_signal, SIGTERM);
    uv_signal_start(&n->sig_hup, on_hup, SIGHUP);
    TERN_LOGI("ternd node %u listening on %s", n->cfg.node_id, n->cfg.listen);
    return tern_admin_start(n, errmsg);
}

static void on_cluster_closed(void *ctx)
{
    (void)ctx;
}

/* Graceful stop: refuse new work, tell clients (v5: 0x8B), close every handle so
 * the loop ends. */
void tern_node_stop(struct tern_node *n)
{
    if (n->stopping)
        return;
    n->stopping = true;
    tern_listeners_stop(n);
    /* Closing is asynchronous (handles close on a later turn), so the list is
     * stable while we walk it. */
    for (struct tern_conn *c = n->conns; c; c = c->next)
        tern_conn_close(c, TERN_RC_SERVER_SHUTTING_DOWN, NULL);
    on_flush(&n->flush);
    uv_close((uv_handle_t *)&n->flush, NULL);
    uv_close((uv_handle_t *)&n->tick_timer, NULL);
    uv_close((uv_handle_t *)&n->quorum_timer, NULL);
    uv_close((uv_handle_t *)&n->retry_timer, NULL);
    uv_close((uv_handle_t *)&n->conn_timer, NULL);
    uv_close((uv_handle_t *)&n->sig_int, NULL);
    uv_close((uv_handle_t *)&n->sig_term, NULL);
    uv_close((uv_handle_t *)&n->sig_hup, NULL);
    tern_admin_stop(n);
    tern_cluster_close(n->cluster, on_cluster_closed, n);
}

/* After the loop has ended. */
void tern_node_free(struct tern_node *n)
{
    tern_flow_free(n); /* drops connection references: before the client table */
    tern_admin_free(n);
    tern_access_free(n);
    tern_cluster_free(n->cluster);
    tern_fsm_free(n->local);
    tern_clients_free(&n->clients);
    tern_routes_free(n);
    tern_listeners_free(n);
    free(n->rshared);
    free(n->tls_in);
    free(n->tls_out);
    free(n->ws_in);
    free(n->dirty);
}
