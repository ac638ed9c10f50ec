/* The ternd process around the front end (node/): start-up, identity, signals,
 * and the lifecycle that starts the front end's listeners and the admin API. */
#ifndef TERN_NODE_H
#define TERN_NODE_H

#include "tern/admin.h"
#include "tern/frontend.h"

/* identity.c */
/* Checks DATA_DIR/identity against cfg (node id, cluster name), or writes it on
 * the first start; sets cfg->cluster_id. TERN_EINVAL: the directory is another
 * node's or another cluster's (message names both); TERN_EIO/ECORRUPT otherwise
 * (node/identity.c). */
int tern_identity_open(struct tern_config *cfg, char *errmsg);

/* node.c */
int tern_node_init(struct tern_node *n, uv_loop_t *loop, const struct tern_config *cfg,
                   char *errmsg);
/* Opens the listeners (the node takes the TLS contexts of tern_listeners_tls_load),
 * timers and signal handlers. */
int tern_node_start(struct tern_node *n, struct tern_tls_ctx *tls[TERN_LISTENERS_MAX],
                    char *errmsg);
void tern_node_stop(struct tern_node *n);
void tern_node_free(struct tern_node *n);

/* Executes this program again with glibc's heap on transparent huge pages
 * (cheap fork() for snapshots), unless the environment names that tunable
 * already (node/heap_thp.c). Returns only when it did not exec. */
void tern_heap_thp_reexec(char **argv);

#endif
