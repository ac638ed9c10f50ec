/* Unit tests of FSM snapshots (tern_fsm_snapshot / tern_fsm_restore) and of the
 * storage primitives under them (CRC32C, bounded writer / reader, container).
 *
 * The central property: a restored FSM is the original. Checked two ways:
 * snapshot -> restore -> snapshot gives the same bytes, and the same random
 * command stream applied to the original and to the restored copy gives the
 * same effects (an observer hashes every effect) and the same results. Then
 * corruption: every bit flip and every truncation of a snapshot is refused and
 * leaves the target FSM as it was. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tern/cmd.h"
#include "tern/error.h"
#include "tern/fsm.h"
#include "tern/hmap.h"
#include "tern/storage.h"

#define NEVER 0xFFFFFFFFu

/* --- effect-hashing observer --- */

struct hx {
    uint64_t h;
    uint64_t n;
};

static void mix(struct hx *x, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        x->h ^= b[i];
        x->h *= UINT64_C(1099511628211);
    }
}

static void mix_u64(struct hx *x, uint64_t v)
{
    mix(x, &v, sizeof(v));
}

static void mix_bytes(struct hx *x, struct tern_bytes b)
{
    mix_u64(x, b.len);
    if (b.len)
        mix(x, b.ptr, b.len);
}

static void mix_session(struct hx *x, const struct tern_fsm_session *s)
{
    mix_bytes(x, tern_fsm_session_client_id(s));
    mix_u64(x, tern_fsm_session_epoch(s));
    mix_u64(x, tern_fsm_session_owner(s));
}

static void mix_msg(struct hx *x, const struct tern_msg *m)
{
    mix_u64(x, m->id);
    mix_bytes(x, m->topic);
    mix_bytes(x, m->payload);
    mix_u64(x, m->qos | (uint64_t)m->retain << 8 | (uint64_t)m->flags << 16);
    mix_u64(x, m->expire_at_ms);
    mix_u64(x, m->created_ms);
}

static void on_opened(void *ctx, struct tern_fsm_session *s, bool present)
{
    struct hx *x = ctx;
    x->n++;
    mix_u64(x, 1 + present);
    mix_session(x, s);
}

static void on_subscribed(void *ctx, struct tern_fsm_session *s, uint16_t packet_id)
{
    struct hx *x = ctx;
    x->n++;
    mix_u64(x, 3 + ((uint64_t)packet_id << 8));
    mix_session(x, s);
}

static void on_deliver(void *ctx, struct tern_fsm_session *s,
                       const struct tern_delivery *d)
{
    struct hx *x = ctx;
    x->n++;
    mix_u64(x, 4);
    mix_session(x, s);
    if (d->msg)
        mix_msg(x, d->msg);
    uint8_t f[6] = {d->qos, d->retain, d->dup, d->pubrel, d->sub_id_count};
    mix(x, f, sizeof(f));
    mix_u64(x, d->packet_id);
    mix(x, d->sub_ids, d->sub_id_count * sizeof(uint32_t));
}

static void on_fenced(void *ctx, struct tern_bytes id, uint32_t owner, uint64_t epoch,
                      uint8_t reason)
{
    struct hx *x = ctx;
    x->n++;
    mix_u64(x, 5);
    mix_bytes(x, id);
    mix_u64(x, owner);
    mix_u64(x, epoch);
    mix_u64(x, reason);
}

static void on_published(void *ctx, const struct tern_msg *m)
{
    struct hx *x = ctx;
    x->n++;
    mix_u64(x, 6);
    mix_msg(x, m);
}

static struct tern_fsm *new_fsm(struct hx *x, const struct tern_fsm_limits *lim)
{
    struct tern_fsm_observer obs = {.ctx = x,
                                    .opened = on_opened,
                                    .subscribed = on_subscribed,
                                    .deliver = on_deliver,
                                    .fenced = on_fenced,
                                    .published = on_published};
    struct tern_fsm *f = tern_fsm_new(1, lim, &obs);
    assert_non_null(f);
    return f;
}

static struct tern_fsm_limits small_limits(void)
{
    struct tern_fsm_limits l;
    tern_fsm_limits_default(&l);
    l.inflight_max = 3;
    l.queue_max = 6;
    l.queue_qos0 = true;
    l.retained_max = 8;
    return l;
}

/* --- command helpers --- */

static struct tern_bytes B(const char *s) {
    return (struct tern_bytes){(const uint8_t *)s, (uint32_t)strlen(s)};
}

static uint64_t
epoch_of(struct tern_fsm *f, const char *id)
{
    struct tern_fsm_session *s = tern_fsm_session_get(f, id, strlen(id));
    return s ? tern_fsm_session_epoch(s) : 0;
}

static struct tern_fsm_result run(struct tern_fsm *f, struct tern_cmd *c, uint64_t now)
{
    struct tern_fsm_result r;
    c->now_ms = now;
    tern_fsm_apply(f, c, &r);
    return r;
}

static void do_open(struct tern_fsm *f, uint64_t now, const char *id, uint32_t node,
                    uint32_t expiry, uint16_t rmax, const char *will, uint32_t delay)
{
    struct tern_cmd c = {.type = TERN_CMD_SESSION_OPEN};
    c.u.open.client_id = B(id);
    c.u.open.node = node;
    c.u.open.proto = TERN_MQTT_5;
    c.u.open.expiry_s = expiry;
    c.u.open.receive_max = rmax;
    if (will) {
        c.u.open.has_will = true;
        c.u.open.will_delay_s = delay;
        c.u.open.will.topic = B(will);
        c.u.open.will.payload = B("bye");
        c.u.open.will.qos = 1;
        c.u.open.will.flags = TERN_MSG_HAS_CONTENT_TYPE;
        c.u.open.will.content_type = B("text/plain");
    }
    assert_int_equal(run(f, &c, now).status, TERN_OK);
}

static void do_close(struct tern_fsm *f, uint64_t now, const char *id, uint32_t expiry,
                     bool will)
{
    struct tern_cmd c = {.type = TERN_CMD_SESSION_CLOSE};
    c.u.close.client_id = B(id);
    c.u.close.epoch = epoch_of(f, id);
    c.u.close.expiry_s = expiry;
    c.u.close.publish_will = will;
    assert_int_equal(run(f, &c, now).status, TERN_OK);
}

static void do_sub(struct tern_fsm *f, uint64_t now, const char *id, const char *filter,
                   uint8_t options, uint32_t sub_id)
{
    uint8_t list[512];
    struct tern_cmd_sub e = {.filter = B(filter), .options = options, .sub_id = sub_id};
    size_t n = tern_cmd_put_sub(list, sizeof(list), &e);
    struct tern_cmd c = {.type = TERN_CMD_SUBSCRIBE};
    c.u.sub.client_id = B(id);
    c.u.sub.epoch = epoch_of(f, id);
    c.u.sub.packet_id = 1;
    c.u.sub.list = (struct tern_bytes){list, (uint32_t)n};
    c.u.sub.count = 1;
    assert_int_equal(run(f, &c, now).status, TERN_OK);
}

static void do_pub(struct tern_fsm *f, uint64_t now, const char *from, const char *topic,
                   const char *payload, uint8_t qos, bool retain, uint16_t inbound)
{
    struct tern_cmd c = {.type = TERN_CMD_PUBLISH};
    if (from) {
        c.u.publish.client_id = B(from);
        c.u.publish.epoch = epoch_of(f, from);
    }
    c.u.publish.inbound_packet_id = inbound;
    c.u.publish.msg.topic = B(topic);
    c.u.publish.msg.payload = B(payload);
    c.u.publish.msg.qos = qos;
    c.u.publish.msg.retain = retain;
    c.u.publish.msg.flags = TERN_MSG_HAS_EXPIRY | TERN_MSG_HAS_CORRELATION;
    c.u.publish.msg.expiry_s = 3600;
    c.u.publish.msg.correlation_data = B("corr");
    assert_int_equal(run(f, &c, now).status, TERN_OK);
}

static int do_ack(struct tern_fsm *f, uint64_t now, const char *id, uint16_t pid,
                  uint8_t kind)
{
    struct tern_cmd c = {.type = TERN_CMD_ACK};
    c.u.ack.client_id = B(id);
    c.u.ack.epoch = epoch_of(f, id);
    c.u.ack.packet_id = pid;
    c.u.ack.kind = kind;
    return run(f, &c, now).status;
}

static void do_route(struct tern_fsm *f, uint64_t now, uint8_t type, const char *filter,
                     uint32_t node)
{
    struct tern_cmd c = {.type = type};
    c.u.route.filter = B(filter);
    c.u.route.node = node;
    assert_int_equal(run(f, &c, now).status, TERN_OK);
}

static int do_member(struct tern_fsm *f, uint64_t now, uint8_t type, uint32_t id,
                     const char *raft)
{
    struct tern_cmd c = {.type = type};
    c.u.member.id = id;
    c.u.member.raft = B(raft);
    c.u.member.peer = B("127.0.0.1:7100");
    c.u.member.mqtt = B("");
    return run(f, &c, now).status;
}

static void do_proposal(struct tern_fsm *f, uint64_t now, uint64_t id)
{
    struct tern_cmd c = {.type = TERN_CMD_TICK, .proposal_id = id};
    run(f, &c, now);
}

static void do_start(struct tern_fsm *f, uint64_t now, uint64_t id)
{
    struct tern_cmd c = {.type = TERN_CMD_ORIGIN_START, .proposal_id = id};
    assert_int_equal(run(f, &c, now).status, TERN_OK);
}

/* Sessions with queues, in-flight entries in both states, inbound ids, pending
 * wills, shared groups with advanced counters, retained messages, routes and
 * proposal-dedup state. */
static uint64_t build_rich(struct tern_fsm *f)
{
    uint64_t now = 1000000;
    char id[16];
    for (int i = 0; i < 12; i++) {
        snprintf(id, sizeof(id), "c%d", i);
        do_open(f, now++, id, 1 + (uint32_t)(i % 3), i % 4 ? NEVER : 60, 5,
                i % 2 ? "will/t" : NULL, (uint32_t)(i % 3) * 10);
    }
    do_sub(f, now++, "c0", "a/#", 2, 7);
    do_sub(f, now++, "c0", "a/b", 1, 0);
    do_sub(f, now++, "c1", "a/+", 2 | 0x08, 3);
    do_sub(f, now++, "c2", "$share/g/a/#", 1, 0);
    do_sub(f, now++, "c3", "$share/g/a/#", 2, 0);
    do_sub(f, now++, "c4", "$share/h/+/x", 1, 0);
    do_sub(f, now++, "c5", "will/t", 1, 0);
    do_sub(f, now++, "c6", "a/b", 0, 9);
    for (int i = 0; i < 10; i++) {
        char payload[16];
        snprintf(payload, sizeof(payload), "p%d", i);
        do_pub(f, now++, i % 2 ? "c7" : NULL, i % 3 ? "a/b" : "q/x", payload,
               (uint8_t)(i % 3), i % 4 == 0, i % 2 ? (uint16_t)(10 + i) : 0);
    }
    do_pub(f, now++, NULL, "keep/1", "r1", 1, true, 0);
    do_pub(f, now++, NULL, "keep/2", "r2", 0, true, 0);
    /* c0: pid 1 is QoS 1 (a/b), pid 2 QoS 2: in flight in both states after. */
    assert_int_equal(do_ack(f, now++, "c0", 2, TERN_PUBREC), TERN_OK);
    assert_int_equal(do_ack(f, now++, "c0", 1, TERN_PUBACK), TERN_OK);
    assert_int_equal(do_ack(f, now++, "c1", 2, TERN_PUBREC), TERN_OK);
    /* Offline: pending delayed wills (c1: 10 s, c5 none), queues keep filling. */
    do_close(f, now++, "c1", NEVER, true);
    do_close(f, now++, "c0", NEVER, false);
    do_close(f, now++, "c9", 300, true);
    do_pub(f, now++, NULL, "a/b", "late", 2, false, 0);
    do_route(f, now++, TERN_CMD_ROUTE_ADD, "a/#", 2);
    do_route(f, now++, TERN_CMD_ROUTE_ADD, "a/#", 1);
    do_route(f, now++, TERN_CMD_ROUTE_ADD, "$share/z/a/+", 3);
    do_route(f, now++, TERN_CMD_ROUTE_ADD, "x", 3);
    assert_int_equal(do_member(f, now++, TERN_CMD_MEMBER_SET, 4, "127.0.0.1:7004"), 0);
    assert_int_equal(do_member(f, now++, TERN_CMD_MEMBER_SET, 2, "127.0.0.1:7002"), 0);
    do_start(f, now++, (UINT64_C(2) << 40) | 1);
    for (uint64_t s = 2; s < 1500; s++)
        do_proposal(f, now++, (UINT64_C(2) << 40) | s);
    do_start(f, now++, (UINT64_C(5) << 40) | 3);
    return now;
}

static uint8_t *snap(const struct tern_fsm *f, size_t *len)
{
    uint8_t *b = NULL;
    assert_int_equal(tern_fsm_snapshot(f, &b, len), TERN_OK);
    assert_non_null(b);
    return b;
}

static void assert_snap_equal(const struct tern_fsm *f, const uint8_t *want, size_t len)
{
    size_t n;
    uint8_t *b = snap(f, &n);
    assert_int_equal(n, len);
    assert_memory_equal(b, want, len);
    free(b);
}

/* --- storage primitives --- */

static void test_crc32c(void **state)
{
    (void)state;
    assert_int_equal(tern_crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(tern_crc32c(0, "", 0), 0);
    uint32_t c = tern_crc32c(0, "1234", 4);
    assert_int_equal(tern_crc32c(c, "56789", 5), 0xE3069283u);
    uint8_t zeros[32] = {0};
    assert_int_equal(tern_crc32c(0, zeros, sizeof(zeros)), 0x8A9136AAu);
}

static void test_wbuf_rbuf(void **state)
{
    (void)state;
    struct tern_wbuf w;
    tern_wbuf_init(&w);
    tern_wbuf_put_u8(&w, 0x11);
    tern_wbuf_put_u16(&w, 0x2233);
    tern_wbuf_put_u32(&w, 0x44556677);
    tern_wbuf_put_u64(&w, UINT64_C(0x8899AABBCCDDEEFF));
    tern_wbuf_put_lbytes(&w, "xyz", 3);
    for (int i = 0; i < 1000; i++) /* grows past the first allocation */
        tern_wbuf_put_u8(&w, (uint8_t)i);
    uint8_t *buf;
    size_t len;
    assert_int_equal(tern_wbuf_take(&w, &buf, &len), TERN_OK);
    assert_int_equal(len, 1 + 2 + 4 + 8 + 4 + 3 + 1000);
    assert_int_equal(buf[1], 0x33); /* little-endian */

    struct tern_rbuf r;
    tern_rbuf_init(&r, buf, len);
    assert_int_equal(tern_rbuf_get_u8(&r), 0x11);
    assert_int_equal(tern_rbuf_get_u16(&r), 0x2233);
    assert_int_equal(tern_rbuf_get_u32(&r), 0x44556677);
    assert_true(tern_rbuf_get_u64(&r) == UINT64_C(0x8899AABBCCDDEEFF));
    uint32_t n;
    const uint8_t *p = tern_rbuf_get_lbytes(&r, &n);
    assert_int_equal(n, 3);
    assert_memory_equal(p, "xyz", 3);
    assert_true(tern_rbuf_count_ok(&r, 1000, 1));
    assert_false(tern_rbuf_count_ok(&r, 1001, 1));
    assert_int_equal(r.err, TERN_ECORRUPT);
    /* Latched: everything reads as zero / NULL now. */
    assert_int_equal(tern_rbuf_get_u8(&r), 0);
    assert_null(tern_rbuf_get_bytes(&r, 0));
    assert_int_equal(tern_rbuf_left(&r), 0);

    tern_rbuf_init(&r, buf, 3);
    assert_int_equal(tern_rbuf_get_u32(&r), 0); /* past the end */
    assert_int_equal(r.err, TERN_ECORRUPT);
    tern_rbuf_init(&r, buf, len);
    r.pos = 5; /* a length prefix larger than what is left */
    tern_rbuf_get_bytes(&r, len);
    assert_int_equal(r.err, TERN_ECORRUPT);
    free(buf);
}

static void test_container(void **state)
{
    (void)state;
    struct tern_wbuf w;
    tern_wbuf_init(&w);
    tern_snap_begin(&w);
    tern_wbuf_put_bytes(&w, "123456789", 9);
    assert_int_equal(tern_snap_finish(&w), TERN_OK);
    uint8_t *buf;
    size_t len;
    assert_int_equal(tern_wbuf_take(&w, &buf, &len), TERN_OK);
    static const uint8_t head[] = {'T', 'E', 'R', 'N', 'S',  'N',  'A',  'P', 3, 0,
                                   0,   0,   0,   0,   0,    0,    9,    0,   0, 0,
                                   0,   0,   0,   0,   0x83, 0x92, 0x06, 0xE3};
    assert_int_equal(len, sizeof(head) + 9);
    assert_memory_equal(buf, head, sizeof(head));
    const uint8_t *body;
    size_t body_len;
    char err[TERN_ERRMSG_SIZE];
    assert_int_equal(tern_snap_open(buf, len, &body, &body_len, err), TERN_OK);
    assert_int_equal(body_len, 9);
    buf[8] = 4; /* version */
    assert_int_equal(tern_snap_open(buf, len, &body, &body_len, err), TERN_EUNSUPPORTED);
    buf[8] = 0;
    assert_int_equal(tern_snap_open(buf, len, &body, &body_len, err), TERN_EUNSUPPORTED);
    buf[8] = 1; /* format 1 is still read, and said to be 1 */
    uint16_t version = 0;
    assert_int_equal(tern_snap_open_version(buf, len, &body, &body_len, &version, err),
                     TERN_OK);
    assert_int_equal(version, 1);
    buf[8] = 2; /* and format 2 */
    assert_int_equal(tern_snap_open_version(buf, len, &body, &body_len, &version, err),
                     TERN_OK);
    assert_int_equal(version, 2);
    buf[8] = 3;
    buf[10] = 1; /* flags */
    assert_int_equal(tern_snap_open(buf, len, &body, &body_len, err), TERN_EUNSUPPORTED);
    buf[10] = 0;
    buf[12] = 1; /* reserved */
    assert_int_equal(tern_snap_open(buf, len, &body, &body_len, err), TERN_ECORRUPT);
    buf[12] = 0;
    assert_int_equal(tern_snap_open(buf, len - 1, &body, &body_len, err), TERN_ECORRUPT);
    assert_int_equal(tern_snap_open(NULL, 0, &body, &body_len, err), TERN_ECORRUPT);
    buf[len - 1] ^= 1;
    assert_int_equal(tern_snap_open(buf, len, &body, &body_len, err), TERN_ECORRUPT);
    assert_non_null(strstr(err, "checksum"));
    free(buf);
}

/* --- round trip --- */

static int count_visit(void *ctx, uint32_t node)
{
    uint32_t *v = ctx;
    v[v[0] + 1] = node;
    v[0]++;
    return 0;
}

static void test_round_trip(void **state)
{
    (void)state;
    struct tern_fsm_limits lim = small_limits();
    struct hx ha = {0}, hb = {0};
    struct tern_fsm *a = new_fsm(&ha, &lim);
    build_rich(a);
    size_t len;
    uint8_t *s1 = snap(a, &len);

    struct tern_fsm *b = new_fsm(&hb, &lim);
    char err[TERN_ERRMSG_SIZE] = "";
    assert_int_equal(tern_fsm_restore(b, s1, len, err), TERN_OK);
    assert_int_equal(hb.n, 0); /* no observer effects during restore */
    assert_snap_equal(b, s1, len);

    /* The gauges were recomputed, the counters carried over. */
    const struct tern_fsm_stats *sa = tern_fsm_stats(a), *sb = tern_fsm_stats(b);
    assert_memory_equal(sa, sb, sizeof(*sa));
    assert_true(sa->inflight > 0 && sa->queued > 0 && sa->retained == 4);
    struct tern_fsm_session *c7 = tern_fsm_session_get(b, "c7", 2);
    assert_non_null(c7);
    assert_true(tern_fsm_session_inbound_held(c7, 11));
    assert_int_equal(tern_fsm_route_count(b), 4);
    uint32_t v[8] = {0};
    assert_int_equal(tern_fsm_route_match(b, "a/b", 3, count_visit, v), 0);
    assert_int_equal(v[0], 3);
    assert_int_equal(v[1], 1);
    assert_int_equal(v[2], 2);
    assert_int_equal(v[3], 3);
    assert_int_equal(tern_fsm_next_deadline(a), tern_fsm_next_deadline(b));

    /* An empty FSM round-trips too. */
    struct hx hc = {0};
    struct tern_fsm *c = new_fsm(&hc, &lim);
    size_t elen;
    uint8_t *e = snap(c, &elen);
    assert_int_equal(tern_fsm_restore(b, e, elen, err), TERN_OK);
    assert_snap_equal(b, e, elen);
    assert_null(tern_fsm_session_get(b, "c7", 2));
    assert_int_equal(tern_fsm_route_count(b), 0);
    free(e);
    free(s1);
    tern_fsm_free(a);
    tern_fsm_free(b);
    tern_fsm_free(c);
}

/* --- behavioural equivalence --- */

struct rng {
    uint64_t s;
};

static uint32_t rnd(struct rng *r, uint32_t n)
{
    r->s ^= r->s << 13;
    r->s ^= r->s >> 7;
    r->s ^= r->s << 17;
    return (uint32_t)(r->s % n);
}

static const char *const clients[] = {"c0", "c1", "c2", "c3", "c4",  "c5",
                                      "c6", "c7", "c8", "c9", "c10", "c11"};
static const char *const topics[] = {"a/b", "a/c", "q/x", "will/t", "keep/1", "$SYS/x"};
static const char *const filters[] = {"a/#",          "a/+",          "+/x",    "#",
                                      "$share/g/a/#", "$share/h/+/x", "will/t", "keep/#"};

struct gen {
    struct tern_cmd c;
    uint8_t list[256];
};

static void gen_sub(struct gen *g, struct rng *r)
{
    struct tern_cmd_sub e = {
        .filter = B(filters[rnd(r, 8)]),
        .options = (uint8_t)(rnd(r, 3) | (rnd(r, 4) << 2) | (rnd(r, 3) << 4)),
        .sub_id = rnd(r, 3)};
    if (g->c.type == TERN_CMD_UNSUBSCRIBE)
        e.options = 0, e.sub_id = 0;
    size_t n = tern_cmd_put_sub(g->list, sizeof(g->list), &e);
    g->c.u.sub.list = (struct tern_bytes){g->list, (uint32_t)n};
    g->c.u.sub.count = 1;
    g->c.u.sub.packet_id = (uint16_t)(1 + rnd(r, 9));
}

static void gen_msg(struct tern_cmd_msg *m, struct rng *r)
{
    static const char *const payloads[] = {"", "x", "hello", "payload-3"};
    m->topic = B(topics[rnd(r, 6)]);
    m->payload = B(payloads[rnd(r, 4)]);
    m->qos = (uint8_t)rnd(r, 3);
    m->retain = rnd(r, 3) == 0;
    if (rnd(r, 3) == 0) {
        m->flags = TERN_MSG_HAS_EXPIRY;
        m->expiry_s = 1 + rnd(r, 20);
    }
}

/* One random command, with epochs read from `ref` (current most of the time). */
static void gen_cmd(struct gen *g, struct rng *r, struct tern_fsm *ref)
{
    memset(&g->c, 0, sizeof(g->c));
    const char *id = clients[rnd(r, 12)];
    uint64_t epoch = epoch_of(ref, id) + (rnd(r, 10) == 0 ? 1 : 0);
    static const uint32_t expiries[] = {0, 5, 60, NEVER};
    g->c.type = (uint8_t)(1 + rnd(r, TERN_CMD_TYPE_MAX));
    /* Origins 1 and 2 propose in sequence, now and then a retry (a duplicate),
     * a gap (refused) or a new start. */
    if (rnd(r, 4) == 0) {
        uint32_t o = 1 + rnd(r, 2);
        uint64_t high = tern_fsm_proposal_high(ref, o), seq = high + 1;
        uint32_t k = rnd(r, 10);
        if (high == 0 || k == 0) {
            g->c.type = TERN_CMD_ORIGIN_START;
            seq = high + 1 + rnd(r, 100);
        } else if (k == 1) {
            seq = 1 + rnd(r, (uint32_t)high);
        } else if (k == 2) {
            seq = high + 2 + rnd(r, 5);
        }
        g->c.proposal_id = ((uint64_t)o << 40) | seq;
    }
    struct tern_cmd *c = &g->c;
    switch (c->type) {
    case TERN_CMD_SESSION_OPEN:
        c->u.open.client_id = B(id);
        c->u.open.node = 1 + rnd(r, 3);
        c->u.open.proto = TERN_MQTT_5;
        c->u.open.clean_start = rnd(r, 4) == 0;
        c->u.open.expiry_s = expiries[rnd(r, 4)];
        c->u.open.receive_max = (uint16_t)rnd(r, 4);
        c->u.open.has_will = rnd(r, 2);
        c->u.open.will_delay_s = rnd(r, 2) * 3;
        gen_msg(&c->u.open.will, r);
        break;
    case TERN_CMD_SESSION_CLOSE:
        c->u.close.client_id = B(id);
        c->u.close.epoch = epoch;
        c->u.close.expiry_s = expiries[rnd(r, 4)];
        c->u.close.publish_will = rnd(r, 2);
        break;
    case TERN_CMD_SUBSCRIBE:
    case TERN_CMD_UNSUBSCRIBE:
        c->u.sub.client_id = B(id);
        c->u.sub.epoch = epoch;
        gen_sub(g, r);
        break;
    case TERN_CMD_PUBLISH:
        c->u.publish.client_id = rnd(r, 3) ? B(id) : B("");
        c->u.publish.epoch = epoch;
        gen_msg(&c->u.publish.msg, r);
        c->u.publish.inbound_packet_id =
            c->u.publish.msg.qos == 2 ? (uint16_t)(1 + rnd(r, 4)) : 0;
        break;
    case TERN_CMD_ACK: {
        static const uint8_t kinds[] = {TERN_PUBACK, TERN_PUBREC, TERN_PUBCOMP};
        c->u.ack.client_id = B(id);
        c->u.ack.epoch = epoch;
        c->u.ack.packet_id = (uint16_t)(1 + rnd(r, 8));
        c->u.ack.kind = kinds[rnd(r, 3)];
        c->u.ack.reason = rnd(r, 8) == 0 ? 0x80 : 0;
        break;
    }
    case TERN_CMD_PUBREL:
        c->u.pubrel.client_id = B(id);
        c->u.pubrel.epoch = epoch;
        c->u.pubrel.packet_id = (uint16_t)(1 + rnd(r, 4));
        break;
    case TERN_CMD_SESSION_DELETE:
        if (rnd(r, 4)) /* rarer: it empties the state */
            c->type = TERN_CMD_TICK;
        c->u.del.client_id = B(id);
        break;
    case TERN_CMD_RETAIN_DELETE:
        c->u.retain_delete.topic = B(topics[rnd(r, 6)]);
        break;
    case TERN_CMD_NODE_DOWN:
        if (rnd(r, 3))
            c->type = TERN_CMD_TICK;
        c->u.node_down.node = 1 + rnd(r, 3);
        break;
    case TERN_CMD_ROUTE_ADD:
    case TERN_CMD_ROUTE_DEL:
        c->u.route.filter = B(filters[rnd(r, 8)]);
        c->u.route.node = 1 + rnd(r, 3);
        break;
    case TERN_CMD_MEMBER_SET: /* ids beyond 16 members hit the limit */
        c->u.member.raft = B(rnd(r, 2) ? "127.0.0.1:7001" : "127.0.0.1:7002");
        c->u.member.peer = B("127.0.0.1:7101");
        c->u.member.mqtt = B(rnd(r, 2) ? "" : "127.0.0.1:1883");
        /* fall through */
    case TERN_CMD_MEMBER_DEL:
        c->u.member.id = 1 + rnd(r, 20);
        break;
    case TERN_CMD_CLUSTER_ID: /* the first one applied stays, the others refused */
        c->u.cluster_id.id = 1 + rnd(r, 3);
        break;
    default:
        break;
    }
}

static void result_equal(const struct tern_fsm_result *x, const struct tern_fsm_result *y)
{
    assert_int_equal(x->status, y->status);
    assert_int_equal(x->session_present, y->session_present);
    assert_int_equal(x->epoch, y->epoch);
    assert_int_equal(x->duplicate, y->duplicate);
    assert_int_equal(x->matched, y->matched);
}

/* Applies the same n random commands to both; effects and results must match. */
static void run_both(struct tern_fsm *a, struct hx *ha, struct tern_fsm *b, struct hx *hb,
                     struct rng *r, uint64_t *now, int n)
{
    struct gen g;
    for (int i = 0; i < n; i++) {
        gen_cmd(&g, r, a);
        *now += rnd(r, 4) == 0 ? rnd(r, 20000) : rnd(r, 50);
        struct tern_fsm_result ra = run(a, &g.c, *now);
        struct tern_fsm_result rb = run(b, &g.c, *now);
        result_equal(&ra, &rb);
        if (ha->h != hb->h || ha->n != hb->n)
            fail_msg("command %d (type %u): effects differ", i, g.c.type);
        if (i % 16 == 0 && (!tern_fsm_timers_valid(a) || !tern_fsm_timers_valid(b)))
            fail_msg("command %d (type %u): deadline heaps out of step", i, g.c.type);
        assert_int_equal(tern_fsm_next_deadline(a), tern_fsm_next_deadline(b));
    }
}

static void test_equivalence(void **state)
{
    (void)state;
    struct tern_fsm_limits lim = small_limits();
    for (uint64_t seed = 1; seed <= 6; seed++) {
        struct hx ha = {0}, hb = {0};
        struct tern_fsm *a = new_fsm(&ha, &lim);
        struct tern_fsm *b = new_fsm(&hb, &lim);
        uint64_t now = build_rich(a);
        struct rng r = {seed * UINT64_C(0x9E3779B97F4A7C15)};
        for (int round = 0; round < 4; round++) {
            /* b becomes a copy of a, then both see the same commands. */
            size_t len;
            uint8_t *s = snap(a, &len);
            assert_int_equal(tern_fsm_restore(b, s, len, NULL), TERN_OK);
            free(s);
            hb = ha;
            run_both(a, &ha, b, &hb, &r, &now, 600);
            size_t la, lb;
            uint8_t *sa = snap(a, &la);
            uint8_t *sb = snap(b, &lb);
            assert_int_equal(la, lb);
            assert_memory_equal(sa, sb, la);
            free(sa);
            free(sb);
        }
        tern_fsm_free(a);
        tern_fsm_free(b);
    }
}

/* --- independence from the hash seed --- */

/* One run under hash seed `seed`: a rich state, 300 more sessions with
 * subscriptions, retained messages and routes (so the tables grow and their
 * layouts differ), then random commands. Returns the snapshot; *fx gets the
 * effects (their order included) hashed. */
static uint8_t *seeded_run(const uint64_t seed[2], size_t *len, struct hx *fx)
{
    tern_hmap_seed_set(seed);
    struct tern_fsm_limits lim = small_limits();
    *fx = (struct hx){0};
    struct tern_fsm *f = new_fsm(fx, &lim);
    uint64_t now = build_rich(f);
    char id[32], topic[32];
    for (int i = 0; i < 300; i++) {
        snprintf(id, sizeof id, "dev-%d", i);
        snprintf(topic, sizeof topic, "dev/%d/state", i);
        do_open(f, now++, id, 1 + (uint32_t)(i % 3), NEVER, 5, NULL, 0);
        do_sub(f, now++, id, i % 2 ? "dev/+/state" : "$share/all/dev/#", 1, 0);
        do_sub(f, now++, id, topic, 2, (uint32_t)i);
        do_pub(f, now++, NULL, topic, "on", 1, true, 0);
        do_route(f, now++, TERN_CMD_ROUTE_ADD, topic, 2 + (uint32_t)(i % 2));
    }
    do_pub(f, now++, NULL, "dev/7/state", "all", 1, false, 0);
    do_sub(f, now++, "c6", "dev/#", 1, 0); /* every retained message, in order */
    struct rng r = {UINT64_C(0x5EED)};
    struct gen g;
    for (int i = 0; i < 2000; i++) {
        gen_cmd(&g, &r, f);
        now += rnd(&r, 4) == 0 ? rnd(&r, 20000) : rnd(&r, 50);
        run(f, &g.c, now);
    }
    uint8_t *b = snap(f, len);
    tern_fsm_free(f);
    return b;
}

/* Each process hashes under its own random seed, so replicas lay their tables
 * out differently: the snapshot bytes and the effects (deliveries, wills,
 * fencing, in order) must come out the same under any seed. */
static void test_seed_independent(void **state)
{
    (void)state;
    static const uint64_t seeds[3][2] = {{1, 2}, {0xdeadbeef, 0x12345678}, {~0ull, 7}};
    size_t len0;
    struct hx fx0;
    uint8_t *s0 = seeded_run(seeds[0], &len0, &fx0);
    for (int i = 1; i < 3; i++) {
        size_t len;
        struct hx fx;
        uint8_t *s = seeded_run(seeds[i], &len, &fx);
        assert_int_equal(fx.n, fx0.n);
        if (fx.h != fx0.h)
            fail_msg("seed %d: effects differ", i);
        assert_int_equal(len, len0);
        assert_memory_equal(s, s0, len0);
        free(s);
    }
    free(s0);
}

/* --- corruption --- */

static void small_state(struct tern_fsm *f)
{
    uint64_t now = 5000;
    do_open(f, now++, "s1", 1, NEVER, 5, "w", 5);
    do_open(f, now++, "s2", 2, NEVER, 1, NULL, 0);
    do_sub(f, now++, "s1", "t/#", 2, 4);
    do_sub(f, now++, "s2", "$share/g/t/+", 1, 0);
    do_pub(f, now++, "s2", "t/a", "m1", 2, true, 7);
    do_pub(f, now++, NULL, "t/a", "m2", 1, false, 0);
    assert_int_equal(do_ack(f, now++, "s1", 1, TERN_PUBREC), TERN_OK);
    do_close(f, now++, "s1", NEVER, true);
    do_route(f, now++, TERN_CMD_ROUTE_ADD, "t/#", 3);
    do_start(f, now++, (UINT64_C(1) << 40) | 9);
}

static void test_corruption(void **state)
{
    (void)state;
    struct tern_fsm_limits lim = small_limits();
    struct hx hs = {0}, ht = {0};
    struct tern_fsm *src = new_fsm(&hs, &lim);
    small_state(src);
    size_t len;
    uint8_t *good = snap(src, &len);
    /* The target has state of its own, which must survive every failure. */
    struct tern_fsm *t = new_fsm(&ht, &lim);
    build_rich(t);
    ht.n = 0;
    size_t tlen;
    uint8_t *before = snap(t, &tlen);
    uint8_t *bad = malloc(len);
    char err[TERN_ERRMSG_SIZE];
    for (size_t bit = 0; bit < len * 8; bit++) {
        memcpy(bad, good, len);
        bad[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        int rc = tern_fsm_restore(t, bad, len, err);
        if (rc != TERN_ECORRUPT && rc != TERN_EUNSUPPORTED)
            fail_msg("bit %zu: rc %d", bit, rc);
    }
    for (size_t k = 0; k < len; k++) {
        uint8_t *cut = malloc(k ? k : 1);
        memcpy(cut, good, k);
        assert_int_equal(tern_fsm_restore(t, cut, k, err), TERN_ECORRUPT);
        free(cut);
    }
    assert_int_equal(ht.n, 0);
    assert_snap_equal(t, before, tlen);
    /* And the good one still restores. */
    assert_int_equal(tern_fsm_restore(t, good, len, err), TERN_OK);
    assert_snap_equal(t, good, len);
    free(bad);
    free(before);
    free(good);
    tern_fsm_free(src);
    tern_fsm_free(t);
}

/* Rewrites the CRC so a damaged body reaches field validation. */
static void patch_crc(uint8_t *buf, size_t len)
{
    uint32_t c = tern_crc32c(0, buf + TERN_SNAP_HEADER_SIZE, len - TERN_SNAP_HEADER_SIZE);
    for (int i = 0; i < 4; i++)
        buf[24 + i] = (uint8_t)(c >> (8 * i));
}

static void test_field_validation(void **state)
{
    (void)state;
    struct tern_fsm_limits lim = small_limits();
    struct hx hs = {0}, ht = {0};
    struct tern_fsm *src = new_fsm(&hs, &lim);
    small_state(src);
    size_t len;
    uint8_t *good = snap(src, &len);
    struct tern_fsm *t = new_fsm(&ht, &lim);
    do_open(t, 1, "keep-me", 1, NEVER, 0, NULL, 0);
    size_t tlen;
    uint8_t *before = snap(t, &tlen);
    uint8_t *bad = malloc(len);
    int refused = 0;
    static const uint8_t values[] = {0x00, 0x01, 0x02, 0x7F, 0xFF};
    for (size_t at = TERN_SNAP_HEADER_SIZE; at < len; at++) {
        for (size_t v = 0; v < sizeof(values); v++) {
            if (good[at] == values[v])
                continue;
            memcpy(bad, good, len);
            bad[at] = values[v];
            patch_crc(bad, len);
            int rc = tern_fsm_restore(t, bad, len, NULL);
            if (rc == TERN_OK) {
                /* Accepted: it must be a consistent state of its own. */
                size_t n;
                uint8_t *again = snap(t, &n);
                assert_int_equal(tern_fsm_restore(t, again, n, NULL), TERN_OK);
                free(again);
                assert_int_equal(tern_fsm_restore(t, before, tlen, NULL), TERN_OK);
                continue;
            }
            assert_int_equal(rc, TERN_ECORRUPT);
            assert_snap_equal(t, before, tlen);
            refused++;
        }
    }
    assert_true(refused > 0);
    free(bad);
    free(before);
    free(good);
    tern_fsm_free(src);
    tern_fsm_free(t);
}

/* Format 2's limits section as docs/disk-format.md has it. */
static void put_limits(struct tern_wbuf *w, uint16_t inflight_max)
{
    tern_wbuf_put_u16(w, inflight_max);
    tern_wbuf_put_u32(w, 5);    /* queue_max */
    tern_wbuf_put_u64(w, 4096); /* queue_bytes_max */
    tern_wbuf_put_u8(w, 1);     /* queue_qos0 */
    tern_wbuf_put_u8(w, TERN_DROP_NEW);
    tern_wbuf_put_u32(w, 7);    /* retained_max */
    tern_wbuf_put_u64(w, 8192); /* retained_bytes_max */
    tern_wbuf_put_u32(w, 60);   /* session_expiry_max_s */
    tern_wbuf_put_u32(w, 0);    /* message_expiry_max_s */
    tern_wbuf_put_u32(w, 99);   /* sessions_max */
}

/* A snapshot written by hand from docs/disk-format.md: two sessions. Format 2
 * with members and limits (inflight_max 3); format 1 with members if asked. */
static uint8_t *hand_snap_v(const char *id1, const char *id2, uint32_t count,
                            uint16_t version, bool members, uint16_t inflight_max,
                            size_t *len)
{
    struct tern_wbuf w;
    tern_wbuf_init(&w);
    tern_snap_begin(&w);
    tern_wbuf_put_u64(&w, 2);   /* epoch_counter */
    for (int i = 0; i < 9; i++) /* msg_counter, sub_counter, 7 stats */
        tern_wbuf_put_u64(&w, 0);
    tern_wbuf_put_u32(&w, 0); /* origins */
    tern_wbuf_put_u32(&w, 0); /* messages */
    tern_wbuf_put_u32(&w, count);
    const char *ids[2] = {id1, id2};
    for (int i = 0; i < 2; i++) {
        tern_wbuf_put_lbytes(&w, ids[i], strlen(ids[i]));
        tern_wbuf_put_u32(&w, 1);               /* owner */
        tern_wbuf_put_u64(&w, (uint64_t)i + 1); /* epoch */
        tern_wbuf_put_u8(&w, TERN_MQTT_311);    /* proto */
        tern_wbuf_put_u8(&w, 0);                /* online */
        tern_wbuf_put_u16(&w, 10);              /* receive_max */
        tern_wbuf_put_u32(&w, NEVER);           /* expiry */
        tern_wbuf_put_u64(&w, 77);              /* offline_since */
        tern_wbuf_put_u64(&w, 0);               /* will */
        tern_wbuf_put_u32(&w, 0);               /* will delay */
        tern_wbuf_put_u64(&w, 0);               /* will_at */
        tern_wbuf_put_u16(&w, 1);               /* next packet id */
        for (int k = 0; k < 4; k++)             /* subs, queue, flight, inbound */
            tern_wbuf_put_u32(&w, 0);
    }
    for (int k = 0; k < 3; k++) /* retained, groups, routes */
        tern_wbuf_put_u32(&w, 0);
    if (members) { /* format 1: optional, older snapshots end before it */
        tern_wbuf_put_u32(&w, 1);
        tern_wbuf_put_u32(&w, 4);
        tern_wbuf_put_lbytes(&w, "127.0.0.1:7004", 14);
        tern_wbuf_put_lbytes(&w, "127.0.0.1:7104", 14);
        tern_wbuf_put_lbytes(&w, "", 0);
    }
    /* 0xFFFF: no limits section; format 1 has one only when asked (not 0). */
    if (inflight_max != 0xFFFF && (version >= 2 || inflight_max != 0))
        put_limits(&w, inflight_max);
    if (version >= 3) /* the cluster id */
        tern_wbuf_put_u64(&w, UINT64_C(0x5f0e8c1a9b3d7e21));
    w.buf[8] = (uint8_t)version; /* the header is not under the checksum */
    assert_int_equal(tern_snap_finish(&w), TERN_OK);
    uint8_t *buf;
    assert_int_equal(tern_wbuf_take(&w, &buf, len), TERN_OK);
    return buf;
}

static uint8_t *hand_snap(const char *id1, const char *id2, uint32_t count, bool members,
                          size_t *len)
{
    return members ? hand_snap_v(id1, id2, count, 3, true, 3, len)
                   : hand_snap_v(id1, id2, count, 1, false, 0, len);
}

static void test_hand_written(void **state)
{
    (void)state;
    struct hx h = {0};
    struct tern_fsm *f = new_fsm(&h, NULL);
    size_t len;
    char err[TERN_ERRMSG_SIZE] = "";
    uint8_t *b = hand_snap("x", "y", 2, true, &len);
    assert_int_equal(tern_fsm_restore(f, b, len, err), TERN_OK);
    assert_int_equal(tern_fsm_stats(f)->sessions, 2);
    assert_int_equal(tern_fsm_session_proto(tern_fsm_session_get(f, "y", 1)), 4);
    assert_snap_equal(f, b, len); /* the documented layout is the written one */
    const struct tern_fsm_member *m = tern_fsm_member_get(f, 4);
    assert_non_null(m);
    assert_string_equal(m->peer, "127.0.0.1:7104");
    const struct tern_fsm_limits *l = tern_fsm_limits(f);
    assert_int_equal(l->inflight_max, 3);
    assert_int_equal(l->queue_max, 5);
    assert_int_equal(l->queue_bytes_max, 4096);
    assert_true(l->queue_qos0);
    assert_int_equal(l->drop_policy, TERN_DROP_NEW);
    assert_int_equal(l->retained_max, 7);
    assert_int_equal(l->retained_bytes_max, 8192);
    assert_int_equal(l->session_expiry_max_s, 60);
    assert_int_equal(l->message_expiry_max_s, 0);
    assert_int_equal(l->sessions_max, 99);
    assert_int_equal(tern_fsm_cluster_id(f, NULL), UINT64_C(0x5f0e8c1a9b3d7e21));
    free(b);
    /* Format 2: the same without the cluster id, read as none. */
    b = hand_snap_v("x", "y", 2, 2, true, 3, &len);
    assert_int_equal(tern_fsm_restore(f, b, len, err), TERN_OK);
    assert_int_equal(tern_fsm_limits(f)->inflight_max, 3);
    assert_int_equal(tern_fsm_cluster_id(f, NULL), 0);
    free(b);
    /* Format 3 without it (a format 2 body; the version is outside the checksum):
     * corrupt, the state unchanged. */
    b = hand_snap_v("x", "y", 2, 2, true, 3, &len);
    b[8] = 3;
    assert_int_equal(tern_fsm_restore(f, b, len, err), TERN_ECORRUPT);
    assert_non_null(strstr(err, "cluster id"));
    assert_int_equal(tern_fsm_limits(f)->inflight_max, 3);
    free(b);
    /* Format 1 with members: accepted, with the default limits. */
    struct tern_fsm_limits def;
    tern_fsm_limits_default(&def);
    b = hand_snap_v("x", "y", 2, 1, true, 0, &len);
    assert_int_equal(tern_fsm_restore(f, b, len, err), TERN_OK);
    assert_non_null(tern_fsm_member_get(f, 4));
    assert_true(tern_fsm_limits_equal(tern_fsm_limits(f), &def));
    free(b);
    /* A format 1 snapshot from before members existed: accepted, no members. */
    b = hand_snap("x", "y", 2, false, &len);
    assert_int_equal(tern_fsm_restore(f, b, len, err), TERN_OK);
    assert_null(tern_fsm_member_get(f, 4));
    free(b);
    /* Format 2 requires both sections, with limits in their ranges. */
    b = hand_snap_v("x", "y", 2, 2, false, 0xFFFF, &len);
    assert_int_equal(tern_fsm_restore(f, b, len, err), TERN_ECORRUPT);
    free(b);
    b = hand_snap_v("x", "y", 2, 2, true, 0xFFFF, &len);
    assert_int_equal(tern_fsm_restore(f, b, len, err), TERN_ECORRUPT);
    assert_non_null(strstr(err, "limits"));
    free(b);
    b = hand_snap_v("x", "y", 2, 2, true, 0, &len); /* inflight_max 0 */
    assert_int_equal(tern_fsm_restore(f, b, len, err), TERN_ECORRUPT);
    assert_non_null(strstr(err, "limits"));
    free(b);
    /* Format 1 with a limits section: trailing bytes. */
    b = hand_snap_v("x", "y", 2, 1, true, 3, &len);
    assert_int_equal(tern_fsm_restore(f, b, len, err), TERN_ECORRUPT);
    free(b);
    b = hand_snap("x", "x", 2, true, &len);
    assert_int_equal(tern_fsm_restore(f, b, len, err), TERN_ECORRUPT);
    assert_non_null(strstr(err, "duplicate client id"));
    free(b);
    b = hand_snap("x", "y", 1000, true, &len);
    assert_int_equal(tern_fsm_restore(f, b, len, err), TERN_ECORRUPT);
    assert_non_null(strstr(err, "session count"));
    free(b);
    b = hand_snap("x", "y", 1, true, &len); /* one session and trailing bytes */
    assert_int_equal(tern_fsm_restore(f, b, len, err), TERN_ECORRUPT);
    assert_int_equal(tern_fsm_stats(f)->sessions, 2);
    free(b);
    tern_fsm_free(f);
}

/* Written by tern_fsm_snapshot() of the code before limits were replicated
 * (format 1, commit 7819e92): a persistent offline session with a will, a
 * subscription and three queued messages (one retained), a member and a
 * route. Made by a small program against that commit's cluster/ and storage/;
 * kept as bytes so that a reader change that breaks old snapshots fails. */
static const uint8_t v1_snapshot[] = {
    0x54, 0x45, 0x52, 0x4e, 0x53, 0x4e, 0x41, 0x50, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x4a, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe6, 0xe2, 0x41, 0xa1,
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1e, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x03, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x0e, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x68,
    0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x02, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x76, 0x31, 0x2f, 0x71, 0x01, 0x00,
    0x00, 0x00, 0x6d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x68, 0xe5,
    0xcf, 0x8b, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
    0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x76, 0x31, 0x2f, 0x71, 0x01, 0x00, 0x00,
    0x00, 0x6d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00,
    0x00, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x68, 0xe5, 0xcf,
    0x8b, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00,
    0x00, 0x00, 0x0b, 0x00, 0x00, 0x00, 0x76, 0x31, 0x2f, 0x72, 0x65, 0x74, 0x61, 0x69,
    0x6e, 0x65, 0x64, 0x01, 0x00, 0x00, 0x00, 0x6d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
    0x0a, 0x00, 0x00, 0x00, 0x6f, 0x6c, 0x64, 0x2d, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74,
    0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x00,
    0x0a, 0x00, 0x10, 0x0e, 0x00, 0x00, 0x02, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1e, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x04, 0x00,
    0x00, 0x00, 0x76, 0x31, 0x2f, 0x23, 0x01, 0x04, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x04, 0x00,
    0x00, 0x00, 0x76, 0x31, 0x2f, 0x2b, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
    0x04, 0x00, 0x00, 0x00, 0x0e, 0x00, 0x00, 0x00, 0x31, 0x32, 0x37, 0x2e, 0x30, 0x2e,
    0x30, 0x2e, 0x31, 0x3a, 0x37, 0x30, 0x30, 0x34, 0x0e, 0x00, 0x00, 0x00, 0x31, 0x32,
    0x37, 0x2e, 0x30, 0x2e, 0x30, 0x2e, 0x31, 0x3a, 0x37, 0x31, 0x30, 0x34, 0x0e, 0x00,
    0x00, 0x00, 0x31, 0x32, 0x37, 0x2e, 0x30, 0x2e, 0x30, 0x2e, 0x31, 0x3a, 0x31, 0x38,
    0x38, 0x37};

/* A node restarting from a snapshot written before the upgrade restores it in
 * full, with the default limits, and writes format 2 from then on. */
static void test_format1_snapshot(void **state)
{
    (void)state;
    struct hx h = {0}, h2 = {0};
    struct tern_fsm_limits mine = small_limits();
    struct tern_fsm *f = new_fsm(&h, &mine);
    char err[TERN_ERRMSG_SIZE] = "";
    assert_int_equal(v1_snapshot[8], 1);
    assert_int_equal(tern_fsm_restore(f, v1_snapshot, sizeof(v1_snapshot), err), TERN_OK);
    struct tern_fsm_session *s = tern_fsm_session_get(f, "old-client", 10);
    assert_non_null(s);
    assert_false(tern_fsm_session_online(s));
    assert_int_equal(tern_fsm_session_expiry(s), 3600);
    assert_int_equal(tern_fsm_session_sub_count(s), 1);
    assert_int_equal(tern_fsm_session_queued(s), 3);
    assert_int_equal(tern_fsm_stats(f)->retained, 1);
    assert_non_null(tern_fsm_member_get(f, 4));
    assert_int_equal(tern_fsm_route_count(f), 1);
    assert_int_equal(tern_fsm_proposal_high(f, 2), 3);
    struct tern_fsm_limits def;
    tern_fsm_limits_default(&def);
    assert_true(tern_fsm_limits_equal(tern_fsm_limits(f), &def));
    size_t len;
    uint8_t *b = snap(f, &len);
    assert_int_equal(b[8], TERN_SNAP_VERSION);
    struct tern_fsm *g = new_fsm(&h2, NULL);
    assert_int_equal(tern_fsm_restore(g, b, len, err), TERN_OK);
    assert_snap_equal(g, b, len);
    free(b);
    tern_fsm_free(g);
    tern_fsm_free(f);
}

static int member_visit(void *ctx, const struct tern_fsm_member *m)
{
    uint32_t *v = ctx;
    v[++v[0]] = m->id;
    return 0;
}

static void test_members(void **state)
{
    (void)state;
    struct hx h = {0}, h2 = {0};
    struct tern_fsm *f = new_fsm(&h, NULL);
    assert_int_equal(do_member(f, 1, TERN_CMD_MEMBER_SET, 5, "a:5"), TERN_OK);
    assert_int_equal(do_member(f, 2, TERN_CMD_MEMBER_SET, 3, "a:3"), TERN_OK);
    assert_int_equal(do_member(f, 3, TERN_CMD_MEMBER_SET, 5, "b:5"), TERN_OK);
    assert_int_equal(do_member(f, 4, TERN_CMD_MEMBER_DEL, 9, ""), TERN_OK);
    assert_string_equal(tern_fsm_member_get(f, 5)->raft, "b:5");
    uint32_t v[TERN_FSM_MEMBERS_MAX + 2] = {0};
    tern_fsm_members_walk(f, member_visit, v);
    assert_int_equal(v[0], 2);
    assert_int_equal(v[1], 3);
    assert_int_equal(v[2], 5);
    size_t len;
    uint8_t *s1 = snap(f, &len);
    struct tern_fsm *g = new_fsm(&h2, NULL);
    assert_int_equal(tern_fsm_restore(g, s1, len, NULL), TERN_OK);
    assert_snap_equal(g, s1, len);
    assert_string_equal(tern_fsm_member_get(g, 3)->raft, "a:3");
    free(s1);
    assert_int_equal(do_member(f, 5, TERN_CMD_MEMBER_DEL, 3, ""), TERN_OK);
    assert_null(tern_fsm_member_get(f, 3));
    for (uint32_t id = 10; id < 10 + TERN_FSM_MEMBERS_MAX - 1; id++)
        assert_int_equal(do_member(f, 6, TERN_CMD_MEMBER_SET, id, "x:1"), TERN_OK);
    assert_int_equal(do_member(f, 7, TERN_CMD_MEMBER_SET, 99, "x:1"), TERN_ELIMIT);
    tern_fsm_free(f);
    tern_fsm_free(g);
}

static void test_restore_replaces(void **state)
{
    (void)state;
    struct tern_fsm_limits lim = small_limits();
    struct hx hs = {0}, ht = {0};
    struct tern_fsm *src = new_fsm(&hs, &lim);
    do_open(src, 10, "new", 2, NEVER, 0, NULL, 0);
    do_sub(src, 11, "new", "n/#", 1, 0);
    size_t len;
    uint8_t *s = snap(src, &len);

    struct tern_fsm *t = new_fsm(&ht, &lim);
    build_rich(t);
    struct tern_fsm_session *old = tern_fsm_session_get(t, "c3", 2);
    int marker;
    tern_fsm_session_set_local(old, &marker);
    uint64_t effects = ht.n;
    assert_int_equal(tern_fsm_restore(t, s, len, NULL), TERN_OK);
    assert_int_equal(ht.n, effects); /* restore calls no observer */
    assert_null(tern_fsm_session_get(t, "c3", 2));
    assert_int_equal(tern_fsm_route_count(t), 0);
    assert_int_equal(tern_fsm_stats(t)->sessions, 1);
    assert_int_equal(tern_fsm_stats(t)->retained, 0);
    struct tern_fsm_session *n = tern_fsm_session_get(t, "new", 3);
    assert_non_null(n);
    assert_null(tern_fsm_session_local(n));
    /* The observer of the target is kept: a delivery reaches it. */
    do_pub(t, 12, NULL, "n/1", "hi", 1, false, 0);
    assert_int_equal(ht.n, effects + 1);
    free(s);
    tern_fsm_free(src);
    tern_fsm_free(t);
}

/* --- the restored effect --- */

/* What the `restored` observer saw: its calls, and the state it found then. */
struct rx {
    int calls;
    const struct tern_fsm *f;
    bool saw_new;    /* the snapshot's session was there */
    bool local_null; /* with no local annotation */
    bool in_restored;
    uint64_t resent;     /* DUP deliveries from a resend inside the call */
    uint64_t deliveries; /* all deliveries */
};

static void rx_deliver(void *ctx, struct tern_fsm_session *s,
                       const struct tern_delivery *d)
{
    (void)s;
    struct rx *x = ctx;
    x->deliveries++;
    if (x->in_restored && d->dup && d->msg && d->msg->payload.len == 2 &&
        memcmp(d->msg->payload.ptr, "hi", 2) == 0)
        x->resent++;
}

static void rx_restored(void *ctx, struct tern_fsm *f)
{
    struct rx *x = ctx;
    x->calls++;
    x->f = f;
    struct tern_fsm_session *s = tern_fsm_session_get(f, "new", 3);
    x->saw_new = s != NULL;
    x->local_null = s && tern_fsm_session_local(s) == NULL;
    x->in_restored = true;
    if (s) /* what the node does for a connection it still owns */
        tern_fsm_session_resend(f, s);
    x->in_restored = false;
}

/* A successful restore calls `restored` once, after the new state is in place
 * (the owner can read it and re-send from it there); a failed one does not. */
static void test_restored_effect(void **state)
{
    (void)state;
    struct tern_fsm_limits lim = small_limits();
    struct hx hs = {0};
    struct tern_fsm *src = new_fsm(&hs, &lim);
    do_open(src, 10, "new", 2, NEVER, 0, NULL, 0);
    do_sub(src, 11, "new", "n/#", 1, 0);
    do_pub(src, 12, NULL, "n/1", "hi", 1, false, 0); /* in flight to "new" */
    size_t len;
    uint8_t *s = snap(src, &len);

    struct rx x = {0};
    struct tern_fsm_observer obs = {
        .ctx = &x, .deliver = rx_deliver, .restored = rx_restored};
    struct tern_fsm *t = tern_fsm_new(3, &lim, &obs);
    assert_non_null(t);
    do_open(t, 10, "old", 3, NEVER, 0, NULL, 0);
    int marker;
    tern_fsm_session_set_local(tern_fsm_session_get(t, "old", 3), &marker);

    uint8_t *bad = malloc(len);
    assert_non_null(bad);
    memcpy(bad, s, len);
    bad[len - 1] ^= 1; /* checksum */
    assert_int_equal(tern_fsm_restore(t, bad, len, NULL), TERN_ECORRUPT);
    assert_int_equal(x.calls, 0);
    assert_non_null(tern_fsm_session_get(t, "old", 3));

    assert_int_equal(tern_fsm_restore(t, s, len, NULL), TERN_OK);
    assert_int_equal(x.calls, 1);
    assert_ptr_equal(x.f, t);
    assert_true(x.saw_new);
    assert_true(x.local_null);
    assert_int_equal(x.resent, 1);
    assert_int_equal(x.deliveries, 1); /* nothing but the resend */
    assert_null(tern_fsm_session_get(t, "old", 3));
    free(bad);
    free(s);
    tern_fsm_free(src);
    tern_fsm_free(t);
}

/* Written by tern_fsm_snapshot() of main before the cluster id was replicated
 * (format 2, commit e7b63e9): limits queue_max 7 and inflight_max 4, origin 2 at
 * sequence 3, a persistent offline session "v2-client" with a will and a
 * subscription "v2/#", two queued messages (one retained), member 4 and a route
 * of node 2. Made by a small program against that commit's storage/. */
static const uint8_t v2_snapshot[] = {
    0x54, 0x45, 0x52, 0x4e, 0x53, 0x4e, 0x41, 0x50, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x81, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe4, 0xed, 0x63, 0xe0,
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
    0x02, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x02, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x05, 0x2e, 0x5b, 0xda, 0x9a, 0x01, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00,
    0x76, 0x32, 0x2f, 0x71, 0x01, 0x00, 0x00, 0x00, 0x6d, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x06, 0x2e, 0x5b, 0xda, 0x9a, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0b, 0x00, 0x00, 0x00, 0x76,
    0x32, 0x2f, 0x72, 0x65, 0x74, 0x61, 0x69, 0x6e, 0x65, 0x64, 0x01, 0x00, 0x00, 0x00,
    0x6d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x76, 0x32, 0x2d,
    0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x05, 0x00, 0x0a, 0x00, 0x10, 0x0e, 0x00, 0x00, 0x04, 0x2e,
    0x5b, 0xda, 0x9a, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x76, 0x32, 0x2f, 0x23, 0x01, 0x00,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00,
    0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x76,
    0x32, 0x2f, 0x2b, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00,
    0x00, 0x0e, 0x00, 0x00, 0x00, 0x31, 0x32, 0x37, 0x2e, 0x30, 0x2e, 0x30, 0x2e, 0x31,
    0x3a, 0x37, 0x30, 0x30, 0x34, 0x0e, 0x00, 0x00, 0x00, 0x31, 0x32, 0x37, 0x2e, 0x30,
    0x2e, 0x30, 0x2e, 0x31, 0x3a, 0x37, 0x31, 0x30, 0x34, 0x0e, 0x00, 0x00, 0x00, 0x31,
    0x32, 0x37, 0x2e, 0x30, 0x2e, 0x30, 0x2e, 0x31, 0x3a, 0x31, 0x38, 0x38, 0x37, 0x04,
    0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0xa0, 0x86, 0x01, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x42, 0x0f, 0x00};

/* A node restarting from a snapshot written before the upgrade restores it with
 * no cluster id (a leader proposes one), and writes format 3 from then on. */
static void test_format2_snapshot(void **state)
{
    (void)state;
    struct hx h = {0}, h2 = {0};
    struct tern_fsm *f = new_fsm(&h, NULL);
    char err[TERN_ERRMSG_SIZE] = "";
    assert_int_equal(v2_snapshot[8], 2);
    assert_int_equal(tern_fsm_restore(f, v2_snapshot, sizeof(v2_snapshot), err), TERN_OK);
    struct tern_fsm_session *s = tern_fsm_session_get(f, "v2-client", 9);
    assert_non_null(s);
    assert_false(tern_fsm_session_online(s));
    assert_int_equal(tern_fsm_session_sub_count(s), 1);
    assert_int_equal(tern_fsm_session_queued(s), 2);
    assert_int_equal(tern_fsm_stats(f)->retained, 1);
    assert_non_null(tern_fsm_member_get(f, 4));
    assert_int_equal(tern_fsm_route_count(f), 1);
    assert_int_equal(tern_fsm_proposal_high(f, 2), 3);
    assert_int_equal(tern_fsm_limits(f)->queue_max, 7);
    assert_int_equal(tern_fsm_limits(f)->inflight_max, 4);
    assert_int_equal(tern_fsm_cluster_id(f, NULL), 0);
    /* The id the first leader then proposes applies; written in format 3. */
    struct tern_cmd c = {.type = TERN_CMD_CLUSTER_ID};
    c.u.cluster_id.id = 42;
    assert_int_equal(run(f, &c, 1).status, TERN_OK);
    size_t len;
    uint8_t *b = snap(f, &len);
    assert_int_equal(b[8], TERN_SNAP_VERSION);
    assert_int_equal(TERN_SNAP_VERSION, 3);
    struct tern_fsm *g = new_fsm(&h2, NULL);
    assert_int_equal(tern_fsm_restore(g, b, len, err), TERN_OK);
    assert_int_equal(tern_fsm_cluster_id(g, NULL), 42);
    assert_snap_equal(g, b, len);
    free(b);
    tern_fsm_free(g);
    tern_fsm_free(f);
}

/* CLUSTER_ID: the first id applies, the same again changes nothing, another is
 * refused and changes nothing: decided by the replicated state alone, so
 * replicas that apply the same log agree, and the snapshot carries the id. */
static void test_cluster_id(void **state)
{
    (void)state;
    struct hx ha = {0}, hb = {0};
    struct tern_fsm *a = new_fsm(&ha, NULL);
    struct tern_fsm *b = new_fsm(&hb, NULL);
    uint64_t refused = 1;
    assert_int_equal(tern_fsm_cluster_id(a, &refused), 0);
    assert_int_equal(refused, 0);
    struct tern_cmd c = {.type = TERN_CMD_CLUSTER_ID};
    c.u.cluster_id.id = 0; /* never an id */
    assert_int_equal(run(a, &c, 1).status, TERN_EINVAL);
    assert_int_equal(run(b, &c, 1).status, TERN_EINVAL);
    assert_int_equal(tern_fsm_cluster_id(a, NULL), 0);
    static const uint64_t ids[] = {0x1111, 0x1111, 0x2222, 0x1111, 0x3333};
    static const int want[] = {TERN_OK, TERN_OK, TERN_EPROTO, TERN_OK, TERN_EPROTO};
    /* The last refused id, for the owner's log. */
    static const uint64_t want_refused[] = {0, 0, 0x2222, 0x2222, 0x3333};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        c.u.cluster_id.id = ids[i];
        struct tern_fsm_result ra = run(a, &c, 10 + i), rb = run(b, &c, 10 + i);
        assert_int_equal(ra.status, want[i]);
        assert_int_equal(rb.status, want[i]);
        assert_int_equal(tern_fsm_cluster_id(a, &refused), 0x1111);
        assert_int_equal(refused, want_refused[i]);
        assert_int_equal(tern_fsm_cluster_id(b, NULL), 0x1111);
    }
    size_t la, lb;
    uint8_t *sa = snap(a, &la), *sb = snap(b, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(sa, sb, la);
    /* The id is the body's last 8 bytes (section 10), little-endian. */
    assert_int_equal(sa[la - 8], 0x11);
    assert_int_equal(sa[la - 7], 0x11);
    for (size_t i = la - 6; i < la; i++)
        assert_int_equal(sa[i], 0);
    struct hx hc = {0};
    struct tern_fsm *r = new_fsm(&hc, NULL);
    assert_int_equal(tern_fsm_restore(r, sa, la, NULL), TERN_OK);
    assert_int_equal(tern_fsm_cluster_id(r, &refused), 0x1111);
    assert_int_equal(refused, 0); /* not replicated */
    c.u.cluster_id.id = 0x2222;   /* restored, it refuses the same */
    assert_int_equal(run(r, &c, 99).status, TERN_EPROTO);
    assert_int_equal(tern_fsm_cluster_id(r, NULL), 0x1111);
    free(sa);
    free(sb);
    tern_fsm_free(r);
    tern_fsm_free(a);
    tern_fsm_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c),           cmocka_unit_test(test_wbuf_rbuf),
        cmocka_unit_test(test_container),        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_equivalence),      cmocka_unit_test(test_corruption),
        cmocka_unit_test(test_field_validation), cmocka_unit_test(test_hand_written),
        cmocka_unit_test(test_restore_replaces), cmocka_unit_test(test_members),
        cmocka_unit_test(test_restored_effect),  cmocka_unit_test(test_format1_snapshot),
        cmocka_unit_test(test_seed_independent), cmocka_unit_test(test_format2_snapshot),
        cmocka_unit_test(test_cluster_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
