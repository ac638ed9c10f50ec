/* Default bounds of the session state machine (documented in tern/fsm.h and
 * docs/configuration.md). Kept apart from the FSM proper so the config module
 * and tests can use the defaults without the whole FSM. */
#include "tern/fsm.h"

void tern_fsm_limits_default(struct tern_fsm_limits *l)
{
    *l = (struct tern_fsm_limits){
        .inflight_max = 20,
        .queue_max = 1000,
        .queue_bytes_max = 16u * 1024 * 1024,
        .queue_qos0 = false,
        .drop_policy = TERN_DROP_OLDEST,
        .retained_max = 100000,
        .retained_bytes_max = 256u * 1024 * 1024,
        .session_expiry_max_s = 0, /* no cap */
        .message_expiry_max_s = 0, /* no cap */
        .sessions_max = 1000000,
    };
}
