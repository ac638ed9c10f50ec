/* The replicated log: tern_cluster over canonical/raft (libuv I/O backend).
 *
 * This file starts and stops it (configuration, bootstrap, libraft's settings),
 * runs its timer (re-sends, leader changes, snapshots' schedule, liveness and
 * membership checks) and answers status queries. Proposals and their order are
 * in proposals.c, membership in membership.c, NODE_DOWN in liveness.c; what they
 * share in cluster_internal.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cluster_internal.h"
#include "tern/addr.h"
#include "tern/log.h"

static uint64_t staggered(const struct tern_cluster *c, uint64_t v);
static unsigned snapshot_threshold(const struct tern_cluster *c);

static void on_peer_gone(void *data, raft_id peer)
{
    struct tern_cluster *c = data;
    if (!c->raft_started || c->closing)
        return;
    if (tern_raft_beacon_ping_age_ms(&c->beacon, peer) < TERN_RAFT_BEACON_ALIVE_MS) {
        if (c->gone_peer != peer)
            TERN_LOGI("raft: link to node %llu reset while its beacons come: gone only "
                      "if they stop",
                      (unsigned long long)peer);
        c->gone_peer = peer;
        c->gone_ms = uv_now(c->loop);
        return;
    }
    tern_raft_timing_peer_gone(&c->raft, peer, c->cfg.election_timeout_ms,
                               c->cfg.heartbeat_timeout_ms);
}

/* From the timer: a reset peer whose beacons stopped is gone after all. */
static void peer_gone_check(struct tern_cluster *c)
{
    raft_id peer = c->gone_peer;
    if (!peer)
        return;
    uint64_t since = uv_now(c->loop) - c->gone_ms;
    uint64_t ping = tern_raft_beacon_ping_age_ms(&c->beacon, peer);
    if (ping < since) {
        c->gone_peer = 0; /* a beacon came after the reset: alive */
        TERN_LOGI("raft: node %llu beacons on after the reset: not gone",
                  (unsigned long long)peer);
    } else if (since >= TERN_RAFT_BEACON_ALIVE_MS) {
        c->gone_peer = 0;
        tern_raft_timing_peer_gone(&c->raft, peer, c->cfg.election_timeout_ms,
                                   c->cfg.heartbeat_timeout_ms);
    }
}

static void on_timer(uv_timer_t *t)
{
    struct tern_cluster *c = t->data;
    uint64_t now = cluster_now_ms(c);
    peer_gone_check(c);
    cluster_settle_restored(c);
    /* Proposals apply in order, so the oldest tells: overdue (a frame lost
     * without a leader change), everything outstanding goes again. */
    bool resend = false;
    /* Each re-send without progress waits twice as long (up to 8 x): a slow
     * commit (a lossy network) must not be answered by ever more copies. */
    if (c->head && c->head->sent_ms &&
        now - c->head->sent_ms > c->retry_ms << c->retry_backoff) {
        cluster_resend_all(c);
        if (c->retry_backoff < 3)
            c->retry_backoff++;
        resend = true;
    }
    if ((c->tail && !c->tail->sent_ms) || c->fwd.len)
        resend = true;
    /* A new leader (or term) must get the outstanding tail now, not when the
     * oldest is overdue: cluster_flush re-sends it once it sees the change. */
    if (c->head &&
        (cluster_leader_id(c) != c->sent_leader || c->raft.current_term != c->sent_term))
        resend = true;
    cluster_check_seq_ready(c);
    tern_raft_timing_tick(&c->raft, c->cfg.election_timeout_ms);
    tern_raft_beacon_tick(&c->beacon);
    if (raft_state(&c->raft) == RAFT_LEADER)
        for (unsigned i = 0; i < c->raft.configuration.n; i++) {
            raft_id id = c->raft.configuration.servers[i].id;
            if (id != c->node_id && tern_raft_transport_acked_ms(&c->transport, id) <
                                        c->cfg.election_timeout_ms)
                c->heard_by_ack += (uint64_t)tern_raft_timing_heard(&c->raft, id);
        }
    uint32_t leader = cluster_leader_id(c);
    if (leader != c->last_leader) {
        if (leader == c->node_id)
            TERN_LOGI("raft: node %u is leader (term %llu)", c->node_id,
                      (unsigned long long)c->raft.current_term);
        else if (leader)
            TERN_LOGI("raft: leader is node %u (term %llu)", leader,
                      (unsigned long long)c->raft.current_term);
        else
            TERN_LOGW("raft: no leader (term %llu)",
                      (unsigned long long)c->raft.current_term);
        c->last_leader = leader;
    }
    if (c->snapshot_forced && raft_last_applied(&c->raft) > c->snapshot_forced_from + 1) {
        raft_set_snapshot_threshold(&c->raft, snapshot_threshold(c));
        c->snapshot_forced = 0;
    }
    if (!c->snapshot_forced && c->cfg.snapshot_bytes &&
        c->rfsm.applied_bytes - c->rfsm.snapshot_bytes_at >=
            staggered(c, c->cfg.snapshot_bytes))
        tern_cluster_snapshot_soon(c, NULL, NULL);
    if (resend)
        cluster_kick(c);
    cluster_declare_down(c);
    cluster_members_check(c);
}

/* --- setup --------------------------------------------------------------------- */

static int raft_dir(const char *data_dir, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/raft", data_dir);
    if (n < 0 || (size_t)n >= cap)
        return TERN_EINVAL;
    if (mkdir(out, 0755) != 0 && errno != EEXIST)
        return TERN_EIO;
    return TERN_OK;
}

int cluster_split_addr(const char *s, struct tern_peer_addr *a)
{
    return tern_addr_split(s, a->host, sizeof(a->host), &a->port);
}

static int bootstrap(struct tern_cluster *c, const char *self_addr, char *errmsg)
{
    struct raft_configuration conf;
    raft_configuration_init(&conf);
    if (c->cfg.member_count == 0)
        raft_configuration_add(&conf, c->node_id, self_addr, RAFT_VOTER);
    for (uint32_t i = 0; i < c->cfg.member_count; i++)
        raft_configuration_add(&conf, c->cfg.members[i].id, c->cfg.members[i].raft,
                               RAFT_VOTER);
    int rv = raft_bootstrap(&c->raft, &conf);
    raft_configuration_close(&conf);
    if (rv != 0 && rv != RAFT_CANTBOOTSTRAP) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "raft: bootstrap: %s", raft_strerror(rv));
        return rv;
    }
    return 0;
}

/* Every snapshot closes libraft's open log segment, as does a full segment, and
 * libraft 0.15 closes a segment's kernel AIO context with io_destroy() on the
 * loop thread: that call waits for an RCU grace period, ~32 ms here even on an
 * idle machine, and the node serves nothing meanwhile. A commit needs two
 * nodes, so nodes do not take snapshots at the same point of the log: each
 * uses the configured bounds (raft_snapshot_threshold entries, and
 * raft_snapshot_bytes of applied entries, whichever comes first) plus 0, 25, 50
 * or 75% by its position among the members. Measured (three nodes, 20,000
 * persistent QoS 1 msg/s, 30 s runs): PUBACK p99 29-32 ms with one threshold,
 * 17-22 ms staggered (docs/benchmarks.md has the rest). */
static uint64_t staggered(const struct tern_cluster *c, uint64_t v)
{
    uint32_t pos = c->node_id;
    for (uint32_t i = 0; i < c->cfg.member_count; i++)
        if (c->cfg.members[i].id == c->node_id)
            pos = i;
    return v + v * (pos % 4) / 4;
}

static unsigned snapshot_threshold(const struct tern_cluster *c)
{
    uint64_t t = staggered(c, c->cfg.snapshot_threshold);
    return t > UINT32_MAX ? UINT32_MAX : (unsigned)t;
}

/* The OS reason a listener on addr fails, found by binding it once more (libraft
 * 0.15 reports a failed listen as a bare RAFT_IOERR); NULL if it binds now. */
static const char *bind_reason(const char *addr)
{
    struct tern_peer_addr a;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    if (cluster_split_addr(addr, &a) != TERN_OK ||
        inet_pton(AF_INET, a.host, &sa.sin_addr) != 1)
        return "not an IPv4 address and port";
    sa.sin_port = htons(a.port);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    int err = 0;
    if (fd < 0)
        return strerror(errno);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 1) != 0)
        err = errno;
    close(fd);
    return err ? strerror(err) : NULL;
}

static int start_raft(struct tern_cluster *c, char *errmsg)
{
    char dir[512];
    const char *self_addr = c->cfg.raft_address;
    for (uint32_t i = 0; i < c->cfg.member_count; i++)
        if (c->cfg.members[i].id == c->node_id)
            self_addr = c->cfg.members[i].raft;
    if (raft_dir(c->cfg.data_dir, dir, sizeof(dir)) != TERN_OK) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "data_dir: cannot create %.200s", dir);
        return TERN_EIO;
    }
    int rv = tern_raft_transport_init(&c->transport, c->loop,
                                      c->creds.server ? &c->creds : NULL);
    c->transport.gone_cb = on_peer_gone;
    c->transport.gone_data = c;
    /* A stream that acknowledges nothing for a few election timeouts is given
     * up (raft_transport.c): by then the peer counts as gone anyway. */
    uint64_t stall_ms = (uint64_t)c->cfg.election_timeout_ms * 5;
    c->transport.stall_ms =
        stall_ms > TERN_RAFT_PUMP_STALL_MS_MIN ? stall_ms : TERN_RAFT_PUMP_STALL_MS_MIN;
    if (rv == 0)
        rv = raft_uv_init(&c->io, c->loop, dir, &c->transport.outer);
    /* libraft queues messages for a peer while it waits to reconnect (every
     * heartbeat's AppendEntries to a node it cannot reach): retry sooner, so the
     * queue is trimmed sooner. A 20 s cut at 40 msg/s: 30 -> 12 MB. */
    if (rv == 0)
        raft_uv_set_connect_retry_delay(&c->io, 100);
    /* AppendEntries below this node's snapshot: raft_recv.h. */
    if (rv == 0 && tern_raft_recv_wrap(&c->io, c->cfg.election_timeout_ms) != TERN_OK)
        TERN_LOGW("raft: too many instances to check incoming AppendEntries");
    /* AppendEntries libraft would queue for a peer it is connecting to, and
     * raft_close's callback run once: raft_send.h. */
    if (rv == 0 && tern_raft_send_wrap(&c->io, &c->transport) != TERN_OK)
        TERN_LOGW("raft: too many instances to bound what is queued for a peer");
    /* Election rounds and check-quorum under loss: raft_timing.h. */
    if (rv == 0 && tern_raft_timing_wrap(&c->io, c->cfg.election_timeout_ms) != TERN_OK)
        TERN_LOGW("raft: too many instances to adapt election timing");
    if (rv != 0) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "raft: cannot open %.200s: %s", dir,
                 raft_strerror(rv));
        return TERN_EIO;
    }
    /* Fewer, larger segments: closing one stalls the loop (see staggered()). */
    if (c->cfg.segment_bytes)
        raft_uv_set_segment_size(&c->io, (size_t)c->cfg.segment_bytes);
    tern_raft_fsm_init(&c->rfsm, c->fsm, cluster_on_cmd_applied, c);
    /* libraft 0.15's raft_uv_init fills async_work but leaves io version 1
     * (later releases say 2), and raft_init wants 2 for an FSM with
     * snapshot_async. */
    bool fork = c->cfg.snapshot_fork != TERN_SNAPSHOT_FORK_NEVER && c->io.async_work;
    if (fork && c->io.version < 2)
        c->io.version = 2;
    tern_raft_fsm_set_fork(&c->rfsm,
                           fork ? c->cfg.snapshot_fork : TERN_SNAPSHOT_FORK_NEVER);
    c->rfsm.on_applying = cluster_on_cmd_applying;
    rv = raft_init(&c->raft, &c->io, &c->rfsm.raft, c->node_id, self_addr);
    c->rfsm.r = &c->raft; /* for the entry index in a fatal apply error */
    if (rv != 0) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "raft: %s", raft_errmsg(&c->raft));
        return TERN_EIO;
    }
    raft_set_election_timeout(&c->raft, c->cfg.election_timeout_ms);
    raft_set_heartbeat_timeout(&c->raft, c->cfg.heartbeat_timeout_ms);
    raft_set_snapshot_threshold(&c->raft, snapshot_threshold(c));
    raft_set_snapshot_trailing(&c->raft, c->cfg.snapshot_trailing);
    raft_set_pre_vote(&c->raft, true);
    /* Commits as far as a majority holds the log, not only at its end:
     * raft_commit.h. After the wrappers of io->close above. */
    if (tern_raft_commit_wrap(&c->io) != TERN_OK)
        TERN_LOGW("raft: too many instances to commit ahead of the leader's last write");

    /* Every member bootstraps the same static configuration; on a restart the
     * log already has one and bootstrap says so (RAFT_CANTBOOTSTRAP). A joining
     * node bootstraps nothing: the leader's raft_add brings it the
     * configuration (a configuration of its own would let it elect itself). */
    if (!c->cfg.join)
        rv = bootstrap(c, self_addr, errmsg);
    if (rv != 0)
        return TERN_EIO;
    rv = raft_start(&c->raft);
    if (rv != 0) {
        /* libraft leaves its own message empty when the I/O backend failed (the
         * listener, most often): the reason is in the backend's. */
        const char *why = raft_errmsg(&c->raft);
        if (!why[0])
            why = c->io.errmsg[0] ? c->io.errmsg : c->transport.outer.errmsg;
        if (!why[0] && rv == RAFT_IOERR && bind_reason(self_addr))
            why = bind_reason(self_addr);
        snprintf(errmsg, TERN_ERRMSG_SIZE, "raft: start on %.64s: %.150s", self_addr,
                 why[0] ? why : raft_strerror(rv));
        return TERN_EIO;
    }
    c->raft_started = 1;
    c->start_index = raft_last_index(&c->raft);
    /* Liveness in datagrams beside the streams: raft_beacon.h. */
    if (!c->creds.server &&
        tern_raft_beacon_start(&c->beacon, c->loop, &c->raft, self_addr,
                               c->cfg.election_timeout_ms) != TERN_OK)
        TERN_LOGW("raft: no beacons on %s (UDP: an IPv4 address that binds is needed); "
                  "elections under loss are slower",
                  self_addr);
    /* Connections to every member made ahead of need (raft_transport.h). */
    for (uint32_t i = 0; i < c->cfg.member_count; i++)
        if (c->cfg.members[i].id != c->node_id)
            tern_raft_transport_warm(&c->transport, c->cfg.members[i].id,
                                     c->cfg.members[i].raft);
    return TERN_OK;
}

static bool loopback(const char *hostport)
{
    return strncmp(hostport, "127.", 4) == 0 || strncmp(hostport, "localhost:", 10) == 0;
}

/* cluster_tls's files, or a warning when plain TCP leaves this machine. */
static int tls_start(struct tern_cluster *c, char *errmsg)
{
    const struct tern_cluster_config *cfg = &c->cfg;
    if (!cfg->tls_cert_file || !cfg->tls_cert_file[0]) {
        for (uint32_t i = 0; i < cfg->member_count; i++)
            if (!loopback(cfg->members[i].raft) || !loopback(cfg->members[i].peer)) {
                TERN_LOGW("cluster: node-to-node traffic is plain TCP without "
                          "authentication and member %u is not on loopback: set "
                          "cluster_tls (docs/security.md)",
                          cfg->members[i].id);
                break;
            }
        return TERN_OK;
    }
    c->tls_files = (struct tern_link_tls_files){
        .cert_file = cfg->tls_cert_file,
        .key_file = cfg->tls_key_file,
        .ca_file = cfg->tls_ca_file,
        .crl_file = cfg->tls_crl_file,
    };
    int rv = tern_link_creds_load(&c->creds, &c->tls_files, errmsg);
    if (rv == TERN_OK)
        TERN_LOGI("cluster: mutual TLS between nodes (certificate %s, CA %s)",
                  cfg->tls_cert_file, cfg->tls_ca_file);
    return rv;
}

int tern_cluster_tls_reload(struct tern_cluster *c, char *errmsg)
{
    if (!c->creds.server)
        return TERN_OK;
    return tern_link_creds_load(&c->creds, &c->tls_files, errmsg);
}

bool tern_cluster_tls(const struct tern_cluster *c)
{
    return c->creds.server != NULL;
}

uint64_t tern_cluster_tls_refused(const struct tern_cluster *c)
{
    return c->transport.tls.failures + (c->peers ? tern_peers_tls_refused(c->peers) : 0);
}

int tern_cluster_new(struct tern_cluster **out, uv_loop_t *loop,
                     const struct tern_cluster_config *cfg,
                     const struct tern_fsm_observer *obs, char *errmsg)
{
    struct tern_cluster *c = calloc(1, sizeof(*c));
    if (!c)
        return TERN_ENOMEM;
    c->loop = loop;
    c->node_id = cfg->node_id;
    c->cfg = *cfg;
    c->retry_ms = (uint64_t)cfg->election_timeout_ms * 2 + 200;
    c->fsm = tern_fsm_new(cfg->node_id, &cfg->limits, obs);
    if (!c->fsm || cluster_pending_grow(c) != TERN_OK) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "cannot allocate the state machine");
        tern_fsm_free(c->fsm);
        free(c->hash);
        free(c);
        return TERN_ENOMEM;
    }
    struct tern_peer_addr addrs[TERN_CLUSTER_MEMBERS_MAX];
    for (uint32_t i = 0; i < cfg->member_count; i++) {
        addrs[i].id = cfg->members[i].id;
        if (cluster_split_addr(cfg->members[i].peer, &addrs[i]) != TERN_OK) {
            snprintf(errmsg, TERN_ERRMSG_SIZE, "members: bad peer address \"%.64s\"",
                     cfg->members[i].peer);
            return TERN_EINVAL;
        }
    }
    cluster_check_removed_marker(c);
    uv_idle_init(loop, &c->idle);
    c->idle.data = c;
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    *out = c;
    int rv = tls_start(c, errmsg);
    if (rv != TERN_OK)
        return rv;
    rv = tern_peers_new(&c->peers, loop, c->node_id, addrs, cfg->member_count,
                        cluster_on_peer_frame, c, errmsg);
    if (c->peers && c->creds.server)
        tern_peers_set_tls(c->peers, &c->creds);
    if (rv != TERN_OK)
        return rv;
    if (cfg->peer_frame_bytes_max)
        tern_peers_set_frame_max(c->peers, cfg->peer_frame_bytes_max);
    rv = start_raft(c, errmsg);
    if (rv != TERN_OK)
        return rv;
    uv_timer_start(&c->timer, on_timer, TIMER_MS, TIMER_MS);
    /* This node's proposals begin a new sequence (above any it used before a
     * restart); this one is stamped first. */
    struct tern_cmd start = {.type = TERN_CMD_ORIGIN_START, .now_ms = cluster_wall_ms()};
    tern_cluster_propose(c, &start, NULL, NULL);
    /* Connections this node had before it stopped are gone: mark their sessions
     * offline (and publish their wills) once the log has caught up to here. */
    struct tern_cmd down = {.type = TERN_CMD_NODE_DOWN, .now_ms = cluster_wall_ms()};
    down.u.node_down.node = c->node_id;
    tern_cluster_propose(c, &down, NULL, NULL);
    return TERN_OK;
}

/* An encoded, unstamped proposal, linked nowhere yet. */

void tern_cluster_status(const struct tern_cluster *c, struct tern_cluster_status *st)
{
    struct tern_cluster *m = (struct tern_cluster *)c;
    memset(st, 0, sizeof(*st));
    if (!c->raft_started)
        return;
    st->state = raft_state(&m->raft);
    st->leader = cluster_leader_id(m);
    st->term = m->raft.current_term;
    st->last_index = raft_last_index(&m->raft);
    st->applied_index = raft_last_applied(&m->raft);
    st->pending = c->npending;
    st->proposals = c->applied_own;
    st->entries = c->entries;
    st->entries_compressed = c->entries_compressed;
    st->entry_bytes_commands = c->entry_bytes_commands;
    st->entry_bytes_stored = c->entry_bytes_stored;
    st->proposal_frames_compressed = c->fwd_compressed;
    st->coalesced = tern_raft_transport_coalesced(&m->transport);
    st->streams_moved = tern_raft_transport_moved(&m->transport);
    st->writes_held = tern_raft_commit_held(&m->io);
    st->heard_by_ack = m->heard_by_ack;
    st->beacons_sent = m->beacon.sent;
    st->beacons_kept = m->beacon.kept;
    st->heard_by_beacon = m->beacon.heard;
    st->beacons_refused = m->beacon.refused;
    memcpy(st->commit_us, c->commit_us, sizeof(st->commit_us));
    st->commit_max_us = c->commit_max_us;
    st->commit_sum_us = c->commit_sum_us;
    st->snapshots = c->rfsm.snapshots;
    st->snapshot_max_us = c->rfsm.snapshot_max_us;
    memcpy(st->snapshot_stall_us, c->rfsm.stall_us, sizeof(st->snapshot_stall_us));
    st->snapshot_stall_sum_us = c->rfsm.stall_sum_us;
    st->snapshot_stall_max_us = c->rfsm.stall_max_us;
}

size_t tern_cluster_members(const struct tern_cluster *c, struct tern_member_status *out,
                            size_t cap)
{
    struct tern_cluster *m = (struct tern_cluster *)c;
    if (!c->raft_started)
        return 0;
    uint32_t leader = cluster_leader_id(m);
    const struct raft_configuration *conf = &m->raft.configuration;
    size_t n = 0;
    for (unsigned i = 0; i < conf->n && n < cap; i++, n++) {
        struct tern_member_status *s = &out[n];
        memset(s, 0, sizeof(*s));
        s->id = (uint32_t)conf->servers[i].id;
        snprintf(s->raft, sizeof(s->raft), "%s", conf->servers[i].address);
        s->role = conf->servers[i].role;
        s->leader = s->id == leader;
        s->self = s->id == c->node_id;
        s->link_up = s->self || tern_peers_connected(c->peers, s->id);
        if (raft_state(&m->raft) == RAFT_LEADER && m->raft.leader_state.progress)
            s->match_index = m->raft.leader_state.progress[i].match_index;
    }
    return n;
}

struct transfer_req {
    struct raft_transfer req;
    void (*cb)(void *ctx, int status);
    void *ctx;
};

static void on_transferred(struct raft_transfer *req)
{
    struct transfer_req *t = (struct transfer_req *)req;
    struct tern_cluster *c = req->data;
    uint32_t leader = cluster_leader_id(c);
    if (t->cb)
        t->cb(t->ctx, leader != 0 && leader != c->node_id ? TERN_OK : TERN_EAGAIN);
    free(t);
}

int tern_cluster_transfer(struct tern_cluster *c, uint32_t to,
                          void (*cb)(void *ctx, int status), void *ctx)
{
    if (!c->raft_started || raft_state(&c->raft) != RAFT_LEADER)
        return TERN_ENOTLEADER;
    struct transfer_req *t = calloc(1, sizeof(*t));
    if (!t)
        return TERN_ENOMEM;
    t->cb = cb;
    t->ctx = ctx;
    t->req.data = c;
    int rv = raft_transfer(&c->raft, &t->req, to, on_transferred);
    if (rv != 0) {
        free(t);
        return rv == RAFT_NOTLEADER ? TERN_ENOTLEADER : TERN_EINVAL;
    }
    return TERN_OK;
}

int tern_cluster_snapshot_soon(struct tern_cluster *c, tern_propose_cb cb, void *ctx)
{
    /* libraft 0.15 has no "snapshot now", and snapshots only after applying an
     * entry: lower the threshold until the next snapshot has been taken (the
     * timer puts it back) and propose an empty entry. */
    if (!c->raft_started)
        return TERN_EAGAIN;
    c->snapshot_forced_from = raft_last_applied(&c->raft);
    c->snapshot_forced = 1;
    raft_set_snapshot_threshold(&c->raft, 1);
    struct tern_cmd cmd = {.type = TERN_CMD_BARRIER, .now_ms = cluster_wall_ms()};
    return tern_cluster_propose(c, &cmd, cb, ctx);
}

static void fail_pending(struct tern_cluster *c)
{
    while (c->head) {
        struct proposal *p = c->head;
        cluster_pending_remove(c, p);
        if (p->cb)
            p->cb(p->ctx, TERN_ESHUTDOWN, NULL);
        free(p);
    }
}

/* Raft's I/O may still close handles, and report its close again, after
 * raft_close's callback (raft_send.h): its memory, and ours, go only in
 * tern_cluster_free(), once the loop has stopped. */
static void finish_close(struct tern_cluster *c)
{
    if (c->close_cb)
        c->close_cb(c->close_ctx);
}

void tern_cluster_free(struct tern_cluster *c)
{
    if (!c)
        return;
    tern_raft_recv_unwrap(&c->io);
    tern_raft_send_unwrap(&c->io);
    tern_raft_timing_unwrap(&c->io);
    tern_raft_commit_unwrap(&c->io);
    if (c->raft_closed)
        raft_uv_close(&c->io);
    tern_fsm_free(c->fsm);
    tern_link_creds_free(&c->creds);
    free(c->hash);
    tern_wbuf_free(&c->fwd);
    free(c);
}

static void on_raft_closed(struct raft *r)
{
    struct tern_cluster *c = r->data;
    c->raft_closed = 1;
    tern_raft_transport_close(&c->transport);
    finish_close(c);
}

static void on_handle_closed(uv_handle_t *h)
{
    (void)h;
}

static void close_now(struct tern_cluster *c)
{
    fail_pending(c);
    if (c->removing) { /* its MEMBER_DEL applied; the removal itself never ran */
        struct member_req *r = c->removing;
        c->removing = NULL;
        cluster_member_done(r, TERN_ESHUTDOWN);
    }
    uv_close((uv_handle_t *)&c->idle, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    tern_raft_beacon_close(&c->beacon, on_handle_closed);
    if (c->peers)
        tern_peers_close(c->peers);
    cluster_digests_kill(c); /* the loop ends only once a digest's thread is back */
    if (c->raft_started) {
        c->raft.data = c;
        tern_raft_fsm_cancel(&c->rfsm); /* raft_close waits for the snapshot's work */
        raft_close(&c->raft, on_raft_closed);
    } else {
        finish_close(c);
    }
}

/* Graceful stop waits (bounded) until this node's last proposals - the session
 * closes of its departing clients - are applied and nothing is being appended:
 * closing libraft 0.15 with appends in flight crashed it here (a NULL read in
 * raft_close), and applying them first is what a clean stop should do anyway. */
static void on_drain(uv_timer_t *t)
{
    struct tern_cluster *c = t->data;
    bool idle =
        c->npending == 0 && c->fwd.len == 0 &&
        (!c->raft_started || raft_last_applied(&c->raft) >= raft_last_index(&c->raft));
    if (idle || cluster_now_ms(c) >= c->drain_deadline) {
        uv_timer_stop(&c->timer);
        close_now(c);
        return;
    }
    cluster_flush(c);
}

void tern_cluster_close(struct tern_cluster *c, void (*cb)(void *ctx), void *ctx)
{
    c->close_cb = cb;
    c->close_ctx = ctx;
    c->drain_deadline = cluster_now_ms(c) + 2000;
    uv_timer_stop(&c->timer);
    uv_timer_start(&c->timer, on_drain, 0, 10);
    c->closing = 1; /* no new proposals from here on */
}
