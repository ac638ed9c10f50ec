/* MQTT 5 enhanced authentication with SCRAM-SHA-256 (MQTT 5.0 section 4.12,
 * RFC 5802 / 7677): the node's side of the exchange (tern/scram.h has the
 * pure part).
 *
 *   CONNECT  Authentication Method "SCRAM-SHA-256", Data client-first
 *   AUTH     0x18 Continue authentication, Data server-first       (us)
 *   AUTH     0x18, Data client-final
 *   CONNACK  0x00, Data server-final                                (us)
 *         or 0x87 Not authorized (wrong proof, unknown user, malformed)
 *
 * The CONNECT is kept as received (its bytes) until the proof is checked, then
 * decoded again and handled as any CONNECT, with the SCRAM user as its user
 * name. The whole exchange falls under connect_timeout_ms from the accept (the
 * connection sweep), and each message under TERN_SCRAM_MSG_MAX bytes.
 * Re-authentication (AUTH 0x19) is not offered. */
#include <stdlib.h>
#include <string.h>

#include "access_int.h"
#include "tern/frontend.h"
#include "tern/log.h"
#include "tern/scram.h"

struct tern_conn_scram {
    struct tern_scram x;
    uint8_t *connect; /* the CONNECT packet as received, until the proof is checked */
    size_t connect_len;
    bool known; /* the user has a SCRAM verifier */
    bool done;  /* proof checked: the CONNECT goes on as this user */
    char final[TERN_SCRAM_FINAL_MAX];
    size_t final_len;
};

static bool is_scram(struct tern_bytes m)
{
    return m.len == strlen(TERN_SCRAM_METHOD) &&
           memcmp(m.ptr, TERN_SCRAM_METHOD, m.len) == 0;
}

void tern_access_scram_free(struct tern_conn_opt *o)
{
    struct tern_conn_scram *s = o->scram;
    if (!s)
        return;
    tern_scram_free(&s->x);
    free(s->connect);
    memset(s->final, 0, sizeof s->final);
    free(s);
    o->scram = NULL;
}

bool tern_access_scram_pending(const struct tern_conn *c)
{
    return c->opt && c->opt->scram && !c->opt->scram->done;
}

const char *tern_access_scram_user(const struct tern_conn *c, size_t *len)
{
    const struct tern_conn_scram *s = c->opt ? c->opt->scram : NULL;
    if (!s || !s->done)
        return NULL;
    *len = s->x.user_len;
    return s->x.user;
}

/* CONNACK refusing, counted and logged; the caller returns TERN_EPROTO. */
static int refuse(struct tern_conn *c, uint8_t rc, const char *why)
{
    struct tern_access *a = c->node->access;
    if (rc == TERN_RC_BAD_AUTH_METHOD) {
        a->stats.scram_bad_method++;
    } else {
        a->stats.scram_failed++;
        a->stats.failures++;
        tern_guard_fail(&a->guard, c->peer.addr, tern_mono_ms());
    }
    c->node->stats.connections_rejected++;
    const struct tern_conn_scram *s = c->opt ? c->opt->scram : NULL;
    char pb[TERN_PEER_STRLEN];
    TERN_LOGI("%s: CONNECT refused: enhanced authentication: %s%s%.*s%s",
              tern_conn_peer(c, pb), why, s && s->x.user ? " (user \"" : "",
              (int)(s && s->x.user ? (s->x.user_len > 64 ? 64 : s->x.user_len) : 0),
              s && s->x.user ? s->x.user : "", s && s->x.user ? "\")" : "");
    struct tern_packet p = {.type = TERN_CONNACK};
    p.u.connack.reason = rc;
    tern_conn_send(c, &p);
    if (c->opt)
        tern_access_scram_free(c->opt);
    return TERN_EPROTO;
}

int tern_access_scram_connect(struct tern_conn *c, const struct tern_connect *p,
                              const uint8_t *frame, size_t frame_len, uint8_t *reason)
{
    struct tern_access *a = c->node->access;
    *reason = TERN_RC_SUCCESS; /* refusals are said by CONNACK */
    c->version = TERN_MQTT_5;
    if (tern_access_scram_pending(c)) { /* a second CONNECT */
        *reason = TERN_RC_PROTOCOL_ERROR;
        return TERN_EPROTO;
    }
    /* Users are in the password file: without one nobody has a verifier. */
    if (!a->pw || !is_scram(p->props.auth_method))
        return refuse(c, TERN_RC_BAD_AUTH_METHOD,
                      a->pw ? "method not offered" : "no password_file, no users");
    if (!tern_guard_allow(&a->guard, c->peer.addr, tern_mono_ms())) {
        a->stats.throttled++;
        c->node->stats.connections_rejected++;
        struct tern_packet r = {.type = TERN_CONNACK};
        r.u.connack.reason = TERN_RC_NOT_AUTHORIZED;
        tern_conn_send(c, &r);
        return TERN_EPROTO;
    }
    struct tern_conn_opt *o = tern_conn_opt(c);
    struct tern_conn_scram *s = o ? calloc(1, sizeof *s) : NULL;
    uint8_t *copy = s ? malloc(frame_len) : NULL;
    if (!copy) {
        free(s);
        return TERN_ENOMEM;
    }
    memcpy(copy, frame, frame_len);
    s->connect = copy;
    s->connect_len = frame_len;
    o->scram = s;
    if (!(p->props.mask & TERN_PROP_BIT(TERN_PROP_AUTH_DATA)))
        return refuse(c, TERN_RC_NOT_AUTHORIZED, "no client-first-message");
    int rc =
        tern_scram_client_first(&s->x, p->props.auth_data.ptr, p->props.auth_data.len);
    if (rc == TERN_ENOMEM)
        return rc;
    if (rc != TERN_OK)
        return refuse(c, TERN_RC_NOT_AUTHORIZED,
                      rc == TERN_EUNSUPPORTED
                          ? "channel binding or authorization identity asked for"
                          : "malformed client-first-message");
    /* One identity: a User Name in CONNECT must be the SCRAM one. */
    if (p->has_username && (p->username.len != s->x.user_len ||
                            memcmp(p->username.ptr, s->x.user, s->x.user_len) != 0))
        return refuse(c, TERN_RC_NOT_AUTHORIZED, "CONNECT user name is another");
    struct tern_scram_verifier v;
    s->known = tern_pwfile_scram(a->pw, (const uint8_t *)s->x.user, s->x.user_len, &v);
    if (!s->known)
        tern_scram_verifier_fake(a->scram_secret, s->x.user, s->x.user_len,
                                 tern_pwfile_scram_iterations(a->pw), &v);
    rc = tern_scram_server_first_rand(&s->x, &v);
    memset(&v, 0, sizeof v);
    if (rc != TERN_OK)
        return TERN_ENOMEM;
    struct tern_packet r = {.type = TERN_AUTH};
    r.u.disconnect.reason = TERN_RC_CONTINUE_AUTH;
    struct tern_props *pr = &r.u.disconnect.props;
    pr->mask = TERN_PROP_BIT(TERN_PROP_AUTH_METHOD) | TERN_PROP_BIT(TERN_PROP_AUTH_DATA);
    pr->auth_method = p->props.auth_method;
    pr->auth_data = (struct tern_bytes){(const uint8_t *)s->x.server_first,
                                        (uint32_t)s->x.server_first_len};
    tern_conn_send(c, &r);
    return TERN_OK;
}

int tern_access_scram_auth(struct tern_conn *c, const struct tern_disconnect *p,
                           uint8_t *reason)
{
    struct tern_access *a = c->node->access;
    struct tern_conn_scram *s = c->opt ? c->opt->scram : NULL;
    if (!s || s->done || s->x.state != TERN_SCRAM_SENT) {
        /* No exchange under way (re-authentication is not offered). */
        *reason = TERN_RC_PROTOCOL_ERROR;
        return TERN_EPROTO;
    }
    *reason = TERN_RC_SUCCESS;
    if (p->reason != TERN_RC_CONTINUE_AUTH || !is_scram(p->props.auth_method)) {
        /* MQTT 5.0 4.12: the same method, and 0x18 while it continues. */
        *reason = TERN_RC_PROTOCOL_ERROR;
        return TERN_EPROTO;
    }
    if (!(p->props.mask & TERN_PROP_BIT(TERN_PROP_AUTH_DATA)))
        return refuse(c, TERN_RC_NOT_AUTHORIZED, "no client-final-message");
    int rc = tern_scram_client_final(&s->x, p->props.auth_data.ptr,
                                     p->props.auth_data.len, s->final, &s->final_len);
    if (rc == TERN_ENOMEM)
        return rc;
    if (rc != TERN_OK || !s->known)
        return refuse(c, TERN_RC_NOT_AUTHORIZED,
                      rc == TERN_EMALFORMED ? "malformed client-final-message"
                                            : "wrong proof or unknown user");
    tern_guard_ok(&a->guard, c->peer.addr);
    a->stats.scram_ok++;
    s->done = true;
    /* The CONNECT again, now as this user. */
    struct tern_packet pk;
    struct tern_codec_error err = {0, NULL};
    if (tern_codec_decode(s->connect, s->connect_len, TERN_MQTT_5, &pk, &err) !=
            TERN_OK ||
        pk.type != TERN_CONNECT)
        return refuse(c, TERN_RC_UNSPECIFIED, "CONNECT no longer decodes");
    rc = tern_handle_connect(c, &pk.u.connect, reason);
    /* What it needs of the packet is copied by now. */
    if (c->opt && c->opt->scram) {
        free(c->opt->scram->connect);
        c->opt->scram->connect = NULL;
    }
    return rc;
}

void tern_access_scram_connack(struct tern_conn *c, struct tern_props *pr)
{
    const struct tern_conn_scram *s = c->opt ? c->opt->scram : NULL;
    if (!s || !s->done)
        return;
    pr->mask |= TERN_PROP_BIT(TERN_PROP_AUTH_METHOD) | TERN_PROP_BIT(TERN_PROP_AUTH_DATA);
    pr->auth_method = (struct tern_bytes){(const uint8_t *)TERN_SCRAM_METHOD,
                                          (uint32_t)strlen(TERN_SCRAM_METHOD)};
    pr->auth_data =
        (struct tern_bytes){(const uint8_t *)s->final, (uint32_t)s->final_len};
}
