/* GET /metrics: the node, its FSM, its loop, Raft, the peer links and the process in
 * the Prometheus text format (docs/operations.md lists every metric). */
#include "admin_internal.h"
#include "tern/storage.h"

/* --- metrics ------------------------------------------------------------------ */

/* The text is built in a tern_wbuf (tern_wbuf_printf). */

/* HELP and TYPE lines, then one sample per call of sample(). */
static void metric_head(struct tern_wbuf *b, const char *name, const char *type,
                        const char *help)
{
    tern_wbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample(struct tern_wbuf *b, const char *name, const char *labels, uint64_t v)
{
    tern_wbuf_printf(b, "%s%s%s%s %" PRIu64 "\n", name, labels ? "{" : "",
                     labels ? labels : "", labels ? "}" : "", v);
}

static void metric(struct tern_wbuf *b, const char *name, const char *type,
                   const char *help, uint64_t v)
{
    metric_head(b, name, type, help);
    sample(b, name, NULL, v);
}

/* A gauge in base units (seconds, from microseconds or clocks): a float. */
static void metric_f(struct tern_wbuf *b, const char *name, const char *type,
                     const char *help, double v)
{
    metric_head(b, name, type, help);
    tern_wbuf_printf(b, "%s %.9g\n", name, v);
}

static void metrics_node(struct tern_wbuf *b, const struct tern_node *n)
{
    const struct tern_node_stats *s = &n->stats;
    metric(b, "tern_connections", "gauge", "Client connections open on this node.",
           n->conn_count);
    metric(b, "tern_connections_accepted_total", "counter",
           "Client connections accepted.", s->connections_accepted);
    metric(b, "tern_connections_rejected_total", "counter",
           "Client connections refused (max_connections, shutting down, drained).",
           s->connections_rejected);
    metric(b, "tern_protocol_errors_total", "counter",
           "Connections closed for a protocol error.", s->protocol_errors);
    metric(b, "tern_tls_handshakes_total", "counter", "TLS handshakes completed.",
           s->tls_handshakes);
    metric(b, "tern_tls_handshake_failures_total", "counter",
           "TLS handshakes that failed or timed out (that connection closed).",
           s->tls_handshake_failures);
    if (n->cluster)
        metric(b, "tern_cluster_tls_refused_total", "counter",
               "Node-to-node TLS connections refused (handshake, certificate, identity).",
               tern_cluster_tls_refused(n->cluster));
    metric(b, "tern_proxy_headers_total", "counter",
           "PROXY protocol headers read on proxy_protocol listeners.", s->proxy_headers);
    metric(b, "tern_proxy_refused_total", "counter",
           "Connections to proxy_protocol listeners closed without a valid PROXY "
           "header (missing, broken, too long, or not within proxy_header_timeout_ms).",
           s->proxy_refused);
    metric(b, "tern_ws_handshakes_total", "counter",
           "WebSocket upgrades accepted (ws and wss listeners).", s->ws_handshakes);
    metric(b, "tern_ws_handshake_failures_total", "counter",
           "WebSocket upgrades refused (HTTP 4xx) or not done within "
           "ws_handshake_timeout_ms.",
           s->ws_handshake_failures);
    metric(b, "tern_ws_protocol_errors_total", "counter",
           "WebSocket connections closed for a bad frame (unmasked, text, oversized, "
           "malformed).",
           s->ws_protocol_errors);
    metric(b, "tern_tls_reloads_total", "counter",
           "TLS listeners whose files were loaded again on SIGHUP.", s->tls_reloads);
    metric(b, "tern_tls_reload_failures_total", "counter",
           "TLS reloads refused (a bad new file): the old files stay in use.",
           s->tls_reload_failures);
    const struct tern_access_stats *as = tern_access_stats(n);
    metric_head(b, "tern_auth_total", "counter",
                "CONNECT authentication outcomes (access.c).");
    sample(b, "tern_auth_total", "result=\"ok\"", as->successes);
    sample(b, "tern_auth_total", "result=\"bad_credentials\"", as->failures);
    sample(b, "tern_auth_total", "result=\"throttled\"", as->throttled);
    sample(b, "tern_auth_total", "result=\"anonymous_refused\"", as->anonymous_refused);
    metric_head(b, "tern_auth_reloads_total", "counter",
                "password_file reloads on SIGHUP, by outcome.");
    sample(b, "tern_auth_reloads_total", "result=\"ok\"", as->reloads);
    sample(b, "tern_auth_reloads_total", "result=\"failed\"", as->reload_failures);
    metric_head(b, "tern_connections_limited_total", "counter",
                "Connections closed at accept by a per-address limit.");
    sample(b, "tern_connections_limited_total", "limit=\"rate\"", as->rate_refused);
    sample(b, "tern_connections_limited_total", "limit=\"per_address\"",
           as->per_address_refused);
    metric_head(b, "tern_publish_limited_total", "counter",
                "PUBLISH packets refused: publish_rate_max (rate), publish_quota_max "
                "(quota).");
    sample(b, "tern_publish_limited_total", "limit=\"rate\"", as->publish_rate_refused);
    sample(b, "tern_publish_limited_total", "limit=\"quota\"", as->publish_quota_refused);
    metric(b, "tern_publish_limits_evicted_total", "counter",
           "Client ids whose publish limit state was dropped for another (table full).",
           as->publish_limits_evicted);
    metric(b, "tern_subscriptions_refused_total", "counter",
           "SUBSCRIBE entries refused: the session holds subscriptions_max already.",
           s->subscriptions_refused);
    metric(b, "tern_admin_unauthorized_total", "counter",
           "Admin API requests refused: no or a wrong bearer token.",
           n->admin ? n->admin->unauthorized : 0);
    metric_head(b, "tern_acl_denied_total", "counter",
                "Requests the ACL refused: SUBSCRIBE filters (read), PUBLISH and will "
                "topics (write).");
    sample(b, "tern_acl_denied_total", "access=\"read\"", as->acl_denied[0]);
    sample(b, "tern_acl_denied_total", "access=\"write\"", as->acl_denied[1]);
    metric(b, "tern_acl_resume_unsubscribed_total", "counter",
           "Stored subscriptions removed at a resume: this node's ACL forbids them.",
           as->acl_resume_removed);
    metric_head(b, "tern_auth_scram_total", "counter",
                "MQTT 5 enhanced authentication: SCRAM-SHA-256 exchanges by outcome, "
                "and CONNECTs with another method.");
    sample(b, "tern_auth_scram_total", "result=\"ok\"", as->scram_ok);
    sample(b, "tern_auth_scram_total", "result=\"failed\"", as->scram_failed);
    sample(b, "tern_auth_scram_total", "result=\"bad_method\"", as->scram_bad_method);
    metric(b, "tern_acl_delivery_denied_total", "counter",
           "Messages not sent to a subscriber: the ACL denies it their topic.",
           as->acl_delivery_denied);
    const char *qos[] = {"qos=\"0\"", "qos=\"1\"", "qos=\"2\""};
    metric_head(b, "tern_messages_received_total", "counter",
                "PUBLISH packets received.");
    for (int q = 0; q < 3; q++)
        sample(b, "tern_messages_received_total", qos[q], s->msgs_in[q]);
    metric_head(b, "tern_messages_sent_total", "counter", "PUBLISH packets sent.");
    for (int q = 0; q < 3; q++)
        sample(b, "tern_messages_sent_total", qos[q], s->msgs_out[q]);
    metric(b, "tern_bytes_received_total", "counter", "Bytes read from clients.",
           s->bytes_in);
    metric(b, "tern_bytes_sent_total", "counter", "Bytes written to clients.",
           s->bytes_out);
}

static void metrics_fsm(struct tern_wbuf *b, const struct tern_node *n)
{
    const struct tern_fsm_stats *r = tern_fsm_stats(tern_cluster_fsm(n->cluster));
    const struct tern_fsm_stats *l = tern_fsm_stats(n->local);
    const struct tern_node_stats *s = &n->stats;
    metric_head(
        b, "tern_dropped_messages_total", "counter",
        "Messages not delivered, by reason (slow_client counts connections closed).");
    sample(b, "tern_dropped_messages_total", "reason=\"queue_full\"",
           r->dropped_queue_full + l->dropped_queue_full);
    sample(b, "tern_dropped_messages_total", "reason=\"expired\"",
           r->dropped_expired + l->dropped_expired);
    sample(b, "tern_dropped_messages_total", "reason=\"qos0_offline\"",
           r->dropped_qos0_offline + l->dropped_qos0_offline);
    sample(b, "tern_dropped_messages_total", "reason=\"too_large\"",
           s->dropped_too_large);
    sample(b, "tern_dropped_messages_total", "reason=\"slow_client\"",
           s->dropped_slow_client);
    sample(b, "tern_dropped_messages_total", "reason=\"peer_link_full\"",
           s->dropped_forward);
    sample(b, "tern_dropped_messages_total", "reason=\"peer_backlog_full\"",
           s->dropped_parked);
    metric(b, "tern_publishers_paused_total", "counter",
           "Times a publisher stopped being read because a link to another node "
           "was backed up.",
           s->publishers_paused);
    metric(b, "tern_connections_paused", "gauge",
           "Connections not read now (link backlog).", n->paused_count);
    metric(b, "tern_publishers_held_total", "counter",
           "Times a publisher stopped being read because a subscriber's queue it feeds "
           "passed its high-water mark (flow control).",
           s->publishers_held);
    metric(b, "tern_connections_held", "gauge",
           "Connections not read now (a subscriber's queue is backlogged).",
           n->held_count);
    metric(b, "tern_slow_subscribers_total", "counter",
           "Times a backlogged subscriber made no progress for "
           "slow_subscriber_timeout_ms: its queue met drop_policy.",
           s->slow_subscribers);
    metric(b, "tern_forwards_parked_total", "counter",
           "Messages from other nodes that waited for room in a subscriber's queue "
           "(the hold had not reached their publisher yet).",
           s->forwards_parked);
    metric(b, "tern_retained_rejected_total", "counter",
           "Retained messages refused (limits).", r->retained_rejected);
    metric(b, "tern_sessions", "gauge", "Sessions in the cluster (replicated).",
           r->sessions);
    metric(b, "tern_sessions_online", "gauge", "Sessions with a connection.",
           r->sessions_online);
    metric(b, "tern_sessions_expired_total", "counter", "Sessions ended by expiry.",
           r->sessions_expired);
    metric(b, "tern_wills_published_total", "counter", "Will messages published.",
           r->wills_published);
    const char *store[] = {"store=\"replicated\"", "store=\"local\""};
    const struct tern_fsm_stats *both[] = {r, l};
    metric_head(
        b, "tern_subscriptions", "gauge",
        "Subscriptions: persistent sessions (replicated), clean sessions (local).");
    for (int i = 0; i < 2; i++)
        sample(b, "tern_subscriptions", store[i], both[i]->subscriptions);
    metric_head(b, "tern_queued_messages", "gauge",
                "Messages waiting in session queues.");
    for (int i = 0; i < 2; i++)
        sample(b, "tern_queued_messages", store[i], both[i]->queued);
    metric_head(b, "tern_inflight_messages", "gauge",
                "Messages sent and not acknowledged.");
    for (int i = 0; i < 2; i++)
        sample(b, "tern_inflight_messages", store[i], both[i]->inflight);
    metric(b, "tern_retained_messages", "gauge", "Retained messages.", r->retained);
    metric(b, "tern_retained_bytes", "gauge", "Retained payload bytes.",
           r->retained_bytes);
    metric(b, "tern_routes", "gauge", "Clean-session routes (filter, node).",
           tern_fsm_route_count(tern_cluster_fsm(n->cluster)));
}

/* A Prometheus histogram (seconds) from per-bucket counts: counts[nb] is the
 * rest above the last bound. */
static void histogram(struct tern_wbuf *b, const char *name, const char *help,
                      const uint64_t *bounds_us, size_t nb, const uint64_t *counts,
                      uint64_t sum_us)
{
    char series[96], label[64];
    metric_head(b, name, "histogram", help);
    snprintf(series, sizeof(series), "%s_bucket", name);
    uint64_t cum = 0;
    for (size_t i = 0; i < nb; i++) {
        cum += counts[i];
        snprintf(label, sizeof(label), "le=\"%g\"", (double)bounds_us[i] / 1e6);
        sample(b, series, label, cum);
    }
    cum += counts[nb];
    sample(b, series, "le=\"+Inf\"", cum);
    tern_wbuf_printf(b, "%s_sum %.9g\n", name, (double)sum_us / 1e6);
    snprintf(series, sizeof(series), "%s_count", name);
    sample(b, series, NULL, cum);
}

/* Loop iterations by busy time; this node's commits by latency. */
static void metrics_loop(struct tern_wbuf *b, const struct tern_node *n)
{
    static const uint64_t loop_us[] = TERN_LOOP_BUCKETS_US;
    histogram(b, "tern_loop_busy_seconds",
              "Event-loop iterations by time spent working (not waiting).", loop_us,
              sizeof(loop_us) / sizeof(loop_us[0]), n->stats.loop_busy,
              n->stats.loop_busy_sum_us);
    metric_f(b, "tern_loop_busy_max_seconds", "gauge",
             "Longest event-loop iteration since start.",
             (double)n->stats.loop_busy_max_us / 1e6);
    static const uint64_t commit_us[] = TERN_COMMIT_BUCKETS_US;
    struct tern_cluster_status st;
    tern_cluster_status(n->cluster, &st);
    histogram(b, "tern_commit_latency_seconds",
              "This node's proposals by time from proposal to apply on this node "
              "(what a PUBACK of a durable PUBLISH waits for).",
              commit_us, sizeof(commit_us) / sizeof(commit_us[0]), st.commit_us,
              st.commit_sum_us);
    metric_f(b, "tern_commit_latency_max_seconds", "gauge",
             "Longest proposal-to-apply time since start.",
             (double)st.commit_max_us / 1e6);
    metric(b, "tern_snapshots_taken_total", "counter",
           "Snapshots this node took of its state machine.", st.snapshots);
    metric(b, "tern_snapshots_installed_total", "counter",
           "Snapshots that replaced this node's state machine (from the leader when "
           "this node was behind, or its own at start).",
           n->stats.snapshots_installed);
    metric_f(b, "tern_snapshot_max_seconds", "gauge",
             "Longest time a snapshot took, from its start to its file written (off the "
             "loop when forked: the stall is below).",
             (double)st.snapshot_max_us / 1e6);
    static const uint64_t stall_us[] = TERN_SNAPSHOT_STALL_BUCKETS_US;
    histogram(b, "tern_snapshot_stall_seconds",
              "Snapshots by how long they stopped the event loop (fork(), or the "
              "whole serialisation when not forked).",
              stall_us, TERN_SNAPSHOT_STALL_BUCKETS, st.snapshot_stall_us,
              st.snapshot_stall_sum_us);
    metric_f(b, "tern_snapshot_stall_max_seconds", "gauge",
             "Longest event-loop stall of one snapshot since start.",
             (double)st.snapshot_stall_max_us / 1e6);
}

static void metrics_raft(struct tern_wbuf *b, const struct tern_admin *a)
{
    const struct tern_node *n = a->node;
    struct tern_cluster_status st;
    tern_cluster_status(n->cluster, &st);
    metric(b, "tern_raft_term", "gauge", "Current Raft term.", st.term);
    metric(b, "tern_raft_last_index", "gauge", "Last Raft log index.", st.last_index);
    metric(b, "tern_raft_applied_index", "gauge", "Last applied Raft log index.",
           st.applied_index);
    metric(b, "tern_raft_leader", "gauge", "Leader node id (0: none).", st.leader);
    metric_head(b, "tern_raft_state", "gauge",
                "1 for this node's Raft state, 0 for the others.");
    static const char *states[] = {"state=\"unavailable\"", "state=\"follower\"",
                                   "state=\"candidate\"", "state=\"leader\""};
    for (int i = 0; i < 4; i++)
        sample(b, "tern_raft_state", states[i], st.state == i);
    metric(b, "tern_raft_pending_proposals", "gauge",
           "This node's proposals not applied yet.", st.pending);
    metric(b, "tern_raft_proposals_applied_total", "counter",
           "This node's proposals applied.", st.proposals);
    metric(b, "tern_raft_entries_appended_total", "counter",
           "Log entries this node appended as leader.", st.entries);
    metric(b, "tern_raft_entries_compressed_total", "counter",
           "Of those, stored LZ4-compressed (raft_entry_compression).",
           st.entries_compressed);
    metric_head(b, "tern_raft_entry_bytes_total", "counter",
                "Bytes of the entries this node appended as leader: the commands they "
                "hold, and what the log stores and ships.");
    sample(b, "tern_raft_entry_bytes_total", "form=\"commands\"",
           st.entry_bytes_commands);
    sample(b, "tern_raft_entry_bytes_total", "form=\"stored\"", st.entry_bytes_stored);
    metric(b, "tern_peer_proposal_batches_compressed_total", "counter",
           "Batches of proposals this node sent its leader LZ4-compressed.",
           st.proposal_frames_compressed);
    metric(b, "tern_raft_messages_coalesced_total", "counter",
           "Raft heartbeats and AppendEntries results not sent: a newer one replaced "
           "them while the stream was busy.",
           st.coalesced);
    metric(b, "tern_raft_streams_moved_total", "counter",
           "Raft streams to a peer that waited on TCP retransmissions and carried on "
           "over the spare connection to that peer.",
           st.streams_moved);
    metric(b, "tern_raft_writes_held_total", "counter",
           "Log writes of this node as leader reported to Raft only once a majority "
           "had them, so that it commits what a majority holds.",
           st.writes_held);
    metric(b, "tern_raft_followers_heard_by_ack_total", "counter",
           "Times this node as leader counted a follower as heard for its quorum check "
           "because the follower's host acknowledged the leader's stream to it.",
           st.heard_by_ack);
    metric(b, "tern_raft_beacons_sent_total", "counter",
           "Beacons (datagrams saying this node leads) sent to the other members.",
           st.beacons_sent);
    metric(b, "tern_raft_beacons_kept_total", "counter",
           "Times this node as follower restarted its election timer on its leader's "
           "beacon.",
           st.beacons_kept);
    metric(b, "tern_raft_followers_heard_by_beacon_total", "counter",
           "Times this node as leader counted a follower as heard for its quorum check "
           "by the follower's answer to a beacon.",
           st.heard_by_beacon);
    metric(b, "tern_raft_beacons_refused_total", "counter",
           "Datagrams on the Raft port not taken as beacons (malformed, from an address "
           "that is not their sender's, of another term).",
           st.beacons_refused);
    metric(b, "tern_ready", "gauge", "1 when the node can commit and accepts clients.",
           admin_node_ready(a) && !a->node->draining);
    metric(b, "tern_draining", "gauge", "1 while the node is drained.",
           a->node->draining);
    metric(b, "tern_uptime_seconds", "gauge", "Seconds since the node started.",
           (tern_mono_ms() - a->started_ms) / 1000);
    metric_head(b, "tern_build_info", "gauge", "Version of this ternd.");
    sample(b, "tern_build_info", "version=\"" TERN_VERSION "\"", 1);
}

/* Per member: is its link up, and (on the leader) how many entries it lacks. */
static void metrics_peers(struct tern_wbuf *b, const struct tern_node *n)
{
    struct tern_member_status ms[TERN_CLUSTER_MEMBERS_MAX];
    struct tern_cluster_status st;
    size_t count = tern_cluster_members(n->cluster, ms, TERN_CLUSTER_MEMBERS_MAX);
    tern_cluster_status(n->cluster, &st);
    char label[32];
    bool any = false;
    for (size_t i = 0; i < count; i++)
        any = any || !ms[i].self;
    if (!any)
        return; /* a single node has no peers: no empty families */
    metric_head(b, "tern_peer_up", "gauge", "1 while the link to this member is up.");
    for (size_t i = 0; i < count; i++) {
        snprintf(label, sizeof(label), "peer=\"%u\"", ms[i].id);
        if (!ms[i].self)
            sample(b, "tern_peer_up", label, ms[i].link_up);
    }
    if (st.state != 3)
        return; /* only the leader knows what each member has */
    metric_head(b, "tern_peer_replication_lag_entries", "gauge",
                "Log entries the leader has that this member has not acknowledged.");
    for (size_t i = 0; i < count; i++) {
        snprintf(label, sizeof(label), "peer=\"%u\"", ms[i].id);
        if (!ms[i].self)
            sample(b, "tern_peer_replication_lag_entries", label,
                   st.last_index > ms[i].match_index ? st.last_index - ms[i].match_index
                                                     : 0);
    }
}

/* The process_* metrics of the Prometheus client libraries, from /proc. */
static void metrics_process(struct tern_wbuf *b, const struct tern_admin *a)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    metric_f(b, "process_cpu_seconds_total", "counter", "User and system CPU time spent.",
             (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                 (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
    unsigned long long vm = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%llu %llu", &vm, &rss) != 2)
            vm = rss = 0;
        fclose(f);
    }
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    metric(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
           rss * page);
    metric(b, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
           vm * page);
    uint64_t fds = 0;
    DIR *d = opendir("/proc/self/fd");
    for (struct dirent *e; d && (e = readdir(d));)
        fds += e->d_name[0] != '.';
    if (d) {
        closedir(d);
        fds--; /* the directory's own descriptor */
    }
    metric(b, "process_open_fds", "gauge", "Number of open file descriptors.", fds);
    struct rlimit rl;
    metric(b, "process_max_fds", "gauge", "Maximum number of open file descriptors.",
           getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (uint64_t)rl.rlim_cur : 0);
    metric_f(b, "process_start_time_seconds", "gauge",
             "Start time of the process since the Unix epoch, in seconds.",
             a->started_unix_s);
    struct statvfs vfs;
    if (statvfs(a->node->cfg.data_dir, &vfs) == 0) {
        metric(b, "tern_data_dir_free_bytes", "gauge",
               "Bytes available to ternd on the data directory's file system.",
               (uint64_t)vfs.f_bavail * vfs.f_frsize);
        metric(b, "tern_data_dir_size_bytes", "gauge",
               "Size of the data directory's file system in bytes.",
               (uint64_t)vfs.f_blocks * vfs.f_frsize);
    }
}

void admin_get_metrics(struct tern_admin *a, struct tern_http_conn *hc, const char *tail,
                       const char *query)
{
    struct tern_wbuf b;
    tern_wbuf_init(&b);
    metrics_process(&b, a);
    metrics_peers(&b, a->node);
    metrics_node(&b, a->node);
    metrics_fsm(&b, a->node);
    metrics_raft(&b, a);
    metrics_loop(&b, a->node);
    if (b.err)
        admin_reply_error(hc, 500, NULL, 0, "out of memory");
    else
        tern_http_respond(hc, 200, "text/plain; version=0.0.4; charset=utf-8", NULL,
                          (const char *)b.buf, b.len);
    tern_wbuf_free(&b);
}
