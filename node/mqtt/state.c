/* What the front end asks of the node: the clocks, the replicated limits in
 * force, and whether the node takes clients. */
#include <time.h>

#include "tern/frontend.h"

uint64_t tern_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t tern_mono_ms(void)
{
    return uv_hrtime() / 1000000;
}

const struct tern_fsm_limits *tern_node_limits(const struct tern_node *n)
{
    return tern_fsm_limits(tern_cluster_fsm(n->cluster));
}

bool tern_node_available(const struct tern_node *n)
{
    if (n->cluster && tern_cluster_removed(n->cluster))
        return false; /* for good: no grace period */
    return n->unready_since_ms == 0 || tern_mono_ms() - n->unready_since_ms <
                                           (uint64_t)n->cfg.raft_election_timeout_ms * 4;
}
