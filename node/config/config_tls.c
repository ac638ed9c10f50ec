/* The cluster_tls key: mutual TLS between nodes (docs/configuration.md). */
#include "config_tls.h"

#include <stdio.h>
#include <string.h>

#include "tern/error.h"
#include "tern/tls.h"

static const char *const members[] = {"cert_file", "key_file", "ca_file", "crl_file",
                                      NULL};

static char *field(struct tern_cluster_tls_config *t, size_t i)
{
    char *f[] = {t->cert_file, t->key_file, t->ca_file, t->crl_file};
    return f[i];
}

int tern_config_cluster_tls_from_json(struct tern_cluster_tls_config *t, const cJSON *o,
                                      char *errmsg)
{
    if (!cJSON_IsObject(o)) {
        snprintf(errmsg, TERN_ERRMSG_SIZE,
                 "cluster_tls: must be an object {\"cert_file\", \"key_file\", "
                 "\"ca_file\"}");
        return TERN_EINVAL;
    }
    struct tern_cluster_tls_config n;
    memset(&n, 0, sizeof(n));
    for (const cJSON *m = o->child; m; m = m->next) {
        size_t j = 0;
        while (members[j] && strcmp(members[j], m->string) != 0)
            j++;
        if (!members[j]) {
            snprintf(errmsg, TERN_ERRMSG_SIZE, "cluster_tls: unknown key \"%.64s\"",
                     m->string);
            return TERN_EINVAL;
        }
        char *f = field(&n, j);
        if (f[0]) {
            snprintf(errmsg, TERN_ERRMSG_SIZE, "cluster_tls.%s: duplicate key",
                     members[j]);
            return TERN_EINVAL;
        }
        if (!cJSON_IsString(m) || !m->valuestring[0] ||
            strlen(m->valuestring) >= TERN_CONFIG_STR_MAX) {
            snprintf(errmsg, TERN_ERRMSG_SIZE,
                     "cluster_tls.%s: must be a non-empty string of at most %d bytes",
                     members[j], TERN_CONFIG_STR_MAX - 1);
            return TERN_EINVAL;
        }
        strcpy(f, m->valuestring);
    }
    if (o->child) {
        for (size_t j = 0; j < 3; j++)
            if (!field(&n, j)[0]) {
                snprintf(errmsg, TERN_ERRMSG_SIZE,
                         "cluster_tls.%s: required (with cert_file, key_file, ca_file)",
                         members[j]);
                return TERN_EINVAL;
            }
    }
    *t = n;
    return TERN_OK;
}

int tern_config_cluster_tls_from_text(struct tern_cluster_tls_config *t, const char *s,
                                      char *errmsg)
{
    cJSON *o = cJSON_Parse(s);
    if (!o) {
        snprintf(errmsg, TERN_ERRMSG_SIZE,
                 "cluster_tls: must be a JSON object {\"cert_file\", \"key_file\", "
                 "\"ca_file\"}");
        return TERN_EINVAL;
    }
    int rc = tern_config_cluster_tls_from_json(t, o, errmsg);
    cJSON_Delete(o);
    return rc;
}

cJSON *tern_config_cluster_tls_to_json(const struct tern_cluster_tls_config *t)
{
    cJSON *o = cJSON_CreateObject();
    const char *f[] = {t->cert_file, t->key_file, t->ca_file, t->crl_file};
    for (size_t j = 0; o && members[j]; j++)
        if (f[j][0])
            cJSON_AddStringToObject(o, members[j], f[j]);
    return o;
}

int tern_config_cluster_tls_check(const struct tern_cluster_tls_config *t, char *errmsg)
{
    if (!t->cert_file[0])
        return TERN_OK;
    struct tern_tls_opts o = {
        .server = true,
        .cert_file = t->cert_file,
        .key_file = t->key_file,
        .ca_file = t->ca_file,
        .crl_file = t->crl_file,
        .require_certificate = true,
    };
    struct tern_tls_ctx *ctx = NULL;
    char why[TERN_ERRMSG_SIZE];
    int rc = tern_tls_ctx_new(&ctx, &o, why);
    if (rc != TERN_OK) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "cluster_tls.%.200s", why);
        return rc;
    }
    tern_tls_ctx_free(ctx);
    return TERN_OK;
}
