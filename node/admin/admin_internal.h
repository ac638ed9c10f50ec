/* What the admin API's files share; only node/admin includes it.
 *   admin.c     replies, query parameters, /cluster and /health, routing, lifetime
 *   listings.c  /clients, /sessions, /subscriptions, /retained (pages, cursors) and
 *               the deletes answered once applied
 *   metrics.c   /metrics: the Prometheus text
 *   ops.c       leadership transfer, snapshot, membership, drain
 *   sys.c       the $SYS topics */
#ifndef TERN_ADMIN_INTERNAL_H
#define TERN_ADMIN_INTERNAL_H

#include <dirent.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "admin_http.h"
#include "tern/addr.h"
#include "tern/admin.h"
#include "tern/auth.h"
#include "tern/log.h"
#include "tern/tls.h"

#ifndef TERN_VERSION
#define TERN_VERSION "dev"
#endif

#define LIST_LIMIT_DEFAULT 10000
#define LIST_LIMIT_MAX 10000 /* one page; the cursor (?after=) gets the rest */
#define PATH_MAX_BYTES 8192

struct tern_admin {
    struct tern_node *node;
    struct tern_http_server *http;
    uv_timer_t sys_timer;
    bool sys_started;
    uint64_t started_ms;
    double started_unix_s; /* process_start_time_seconds */
    char bound[80];
    uint64_t unauthorized; /* requests refused for a missing or wrong token */
};

/* admin.c */
void admin_add_bytes(cJSON *o, const char *key, struct tern_bytes b);
bool admin_list_limit(struct tern_http_conn *hc, const char *query, size_t *limit);
bool admin_node_ready(const struct tern_admin *a);
int admin_query_get(const char *query, const char *name, char *out, size_t cap);
int admin_query_uint(const char *query, const char *name, uint64_t max, uint64_t *out);
void admin_reply_error(struct tern_http_conn *hc, int status, const char *key, double num,
                       const char *fmt, ...) TERN_PRINTF(5, 6);
void admin_reply_json(struct tern_http_conn *hc, int status, cJSON *o);

/* listings.c */
void admin_delete_retained(struct tern_admin *a, struct tern_http_conn *hc,
                           const char *tail, const char *query);
void admin_delete_session(struct tern_admin *a, struct tern_http_conn *hc,
                          const char *tail, const char *query);
void admin_get_clients(struct tern_admin *a, struct tern_http_conn *hc, const char *tail,
                       const char *query);
void admin_get_retained(struct tern_admin *a, struct tern_http_conn *hc, const char *tail,
                        const char *query);
void admin_get_session(struct tern_admin *a, struct tern_http_conn *hc, const char *tail,
                       const char *query);
void admin_get_sessions(struct tern_admin *a, struct tern_http_conn *hc, const char *tail,
                        const char *query);
void admin_get_subscriptions(struct tern_admin *a, struct tern_http_conn *hc,
                             const char *tail, const char *query);

/* metrics.c */
void admin_get_metrics(struct tern_admin *a, struct tern_http_conn *hc, const char *tail,
                       const char *query);

/* ops.c */
void admin_delete_member(struct tern_admin *a, struct tern_http_conn *hc,
                         const char *tail, const char *query);
void admin_get_state_digest(struct tern_admin *a, struct tern_http_conn *hc,
                            const char *tail, const char *query);
void admin_post_drain(struct tern_admin *a, struct tern_http_conn *hc, const char *tail,
                      const char *query);
void admin_post_members(struct tern_admin *a, struct tern_http_conn *hc, const char *tail,
                        const char *query);
void admin_post_snapshot(struct tern_admin *a, struct tern_http_conn *hc,
                         const char *tail, const char *query);
void admin_post_transfer(struct tern_admin *a, struct tern_http_conn *hc,
                         const char *tail, const char *query);
void admin_post_undrain(struct tern_admin *a, struct tern_http_conn *hc, const char *tail,
                        const char *query);

/* sys.c */
void admin_on_sys_timer(uv_timer_t *t);

#endif
