/* The admin HTTP API (docs/operations.md) and the $SYS topics (node/admin), on
 * top of the MQTT front end. */
#ifndef TERN_ADMIN_H
#define TERN_ADMIN_H

#include "tern/frontend.h"

int tern_admin_start(struct tern_node *n, char *errmsg);
void tern_admin_stop(struct tern_node *n);
/* admin_tls_cert_file / key_file / ca_file as a TLS context (*out NULL: plain
 * HTTP); the message names the key. tern_node_start checks them before any
 * listener. */
int tern_admin_tls_load(const struct tern_config *cfg, struct tern_tls_ctx **out,
                        char *errmsg);
void tern_admin_free(struct tern_node *n); /* after the loop has ended */

#endif
