/* The cluster_tls key (node/config_tls.c), for node/config.c. */
#ifndef TERN_CONFIG_TLS_H
#define TERN_CONFIG_TLS_H

#include <cjson/cJSON.h>

#include "tern/config.h"

/* {"cert_file", "key_file", "ca_file"[, "crl_file"]} onto t; {} leaves it unset
 * (plain TCP between nodes). TERN_EINVAL with "cluster_tls...: why". */
int tern_config_cluster_tls_from_json(struct tern_cluster_tls_config *t, const cJSON *o,
                                      char *errmsg);
/* The same from JSON text (--set cluster_tls='{...}'). */
int tern_config_cluster_tls_from_text(struct tern_cluster_tls_config *t, const char *s,
                                      char *errmsg);
/* As the file spells it ({} when unset); NULL when out of memory. */
cJSON *tern_config_cluster_tls_to_json(const struct tern_cluster_tls_config *t);

#endif
