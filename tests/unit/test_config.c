/* Tests of node/config/config.c: defaults, every key, every kind of error message,
 * command-line overrides, HOST:PORT splitting, and that the shipped example file
 * and the docs agree with the code. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tern/config.h"
#include "tern/error.h"

/* Every key, in the order of docs/configuration.md. */
static const char *const all_keys[] = {
    "listen",
    "data_dir",
    "log_level",
    "node_id",
    "max_connections",
    "max_packet_size",
    "receive_maximum",
    "topic_alias_maximum",
    "max_keepalive_s",
    "connect_timeout_ms",
    "write_buffer_max",
    "retry_interval_s",
    "slow_subscriber_timeout_ms",
    "max_qos",
    "retain_available",
    "wildcard_subscriptions",
    "shared_subscriptions",
    "subscription_identifiers",
    "client_id_max_len",
    "admin_listen",
    "sys_interval_s",
    "inflight_max",
    "queue_max",
    "queue_bytes_max",
    "queue_qos0",
    "drop_policy",
    "retained_max",
    "retained_bytes_max",
    "session_expiry_max_s",
    "message_expiry_max_s",
    "sessions_max",
    "members",
    "raft_address",
    "raft_election_timeout_ms",
    "raft_heartbeat_timeout_ms",
    "raft_snapshot_threshold",
    "raft_snapshot_trailing",
    "raft_snapshot_bytes",
    "raft_segment_bytes",
    "max_batch_bytes",
    "join",
    "listeners",
    "tls_handshake_timeout_ms",
    "proxy_header_timeout_ms",
    "ws_handshake_timeout_ms",
    "ws_handshake_bytes_max",
    "cluster_tls",
    "cluster_name",
    "log_file",
    "password_file",
    "allow_anonymous",
    "acl_file",
    "admin_token_file",
    "subscriptions_max",
    "connections_per_address_max",
    "connect_rate_per_address",
    "admin_tls_cert_file",
    "admin_tls_key_file",
    "admin_tls_ca_file",
    "publish_rate_max",
    "publish_rate_burst",
    "publish_quota_max",
    "publish_quota_period_s",
};
#define NKEYS (sizeof all_keys / sizeof all_keys[0])

/* Loads a NUL-terminated JSON text onto c. */
static int load(struct tern_config *c, const char *json, char *errmsg)
{
    return tern_config_load_json(c, json, strlen(json), errmsg);
}

/* Expects `json` to be rejected with a message containing `want`. */
static void expect_json_error(const char *json, const char *want)
{
    struct tern_config c;
    char errmsg[TERN_ERRMSG_SIZE] = "";
    tern_config_defaults(&c);
    int rc = load(&c, json, errmsg);
    if (rc != TERN_EINVAL || !strstr(errmsg, want))
        fail_msg("json %s: rc %d, message \"%s\", wanted \"%s\"", json, rc, errmsg, want);
}

static void expect_set_error(const char *key, const char *value, const char *want)
{
    struct tern_config c;
    char errmsg[TERN_ERRMSG_SIZE] = "";
    tern_config_defaults(&c);
    int rc = tern_config_set(&c, key, value, errmsg);
    if (rc != TERN_EINVAL || !strstr(errmsg, want))
        fail_msg("set %s=%s: rc %d, message \"%s\", wanted \"%s\"", key, value, rc,
                 errmsg, want);
}

/* Field by field: struct copies need not preserve padding bytes. */
static void assert_config_equal(const struct tern_config *c, const struct tern_config *d)
{
    assert_string_equal(c->listen, d->listen);
    assert_string_equal(c->data_dir, d->data_dir);
    assert_int_equal(c->log_level, d->log_level);
    assert_int_equal(c->node_id, d->node_id);
    assert_int_equal(c->max_connections, d->max_connections);
    assert_int_equal(c->max_packet_size, d->max_packet_size);
    assert_int_equal(c->receive_maximum, d->receive_maximum);
    assert_int_equal(c->topic_alias_maximum, d->topic_alias_maximum);
    assert_int_equal(c->max_keepalive_s, d->max_keepalive_s);
    assert_int_equal(c->connect_timeout_ms, d->connect_timeout_ms);
    assert_int_equal(c->write_buffer_max, d->write_buffer_max);
    assert_int_equal(c->retry_interval_s, d->retry_interval_s);
    assert_int_equal(c->slow_subscriber_timeout_ms, d->slow_subscriber_timeout_ms);
    assert_int_equal(c->max_qos, d->max_qos);
    assert_int_equal(c->retain_available, d->retain_available);
    assert_int_equal(c->wildcard_subscriptions, d->wildcard_subscriptions);
    assert_int_equal(c->shared_subscriptions, d->shared_subscriptions);
    assert_int_equal(c->subscription_identifiers, d->subscription_identifiers);
    assert_int_equal(c->client_id_max_len, d->client_id_max_len);
    assert_int_equal(c->limits.inflight_max, d->limits.inflight_max);
    assert_int_equal(c->limits.queue_max, d->limits.queue_max);
    assert_int_equal(c->limits.queue_bytes_max, d->limits.queue_bytes_max);
    assert_int_equal(c->limits.queue_qos0, d->limits.queue_qos0);
    assert_int_equal(c->limits.drop_policy, d->limits.drop_policy);
    assert_int_equal(c->limits.retained_max, d->limits.retained_max);
    assert_int_equal(c->limits.retained_bytes_max, d->limits.retained_bytes_max);
    assert_int_equal(c->limits.session_expiry_max_s, d->limits.session_expiry_max_s);
    assert_int_equal(c->limits.message_expiry_max_s, d->limits.message_expiry_max_s);
    assert_int_equal(c->limits.sessions_max, d->limits.sessions_max);
    assert_string_equal(c->admin_listen, d->admin_listen);
    assert_int_equal(c->sys_interval_s, d->sys_interval_s);
    assert_int_equal(c->member_count, d->member_count);
    assert_memory_equal(c->members, d->members, c->member_count * sizeof(c->members[0]));
    assert_string_equal(c->raft_address, d->raft_address);
    assert_int_equal(c->listener_count, d->listener_count);
    assert_int_equal(c->tls_handshake_timeout_ms, d->tls_handshake_timeout_ms);
    assert_int_equal(c->proxy_header_timeout_ms, d->proxy_header_timeout_ms);
    assert_int_equal(c->ws_handshake_timeout_ms, d->ws_handshake_timeout_ms);
    assert_int_equal(c->ws_handshake_bytes_max, d->ws_handshake_bytes_max);
    assert_memory_equal(&c->cluster_tls, &d->cluster_tls, sizeof(c->cluster_tls));
    assert_int_equal(c->raft_election_timeout_ms, d->raft_election_timeout_ms);
    assert_int_equal(c->raft_heartbeat_timeout_ms, d->raft_heartbeat_timeout_ms);
    assert_int_equal(c->raft_snapshot_threshold, d->raft_snapshot_threshold);
    assert_int_equal(c->raft_snapshot_trailing, d->raft_snapshot_trailing);
    assert_int_equal(c->raft_snapshot_bytes, d->raft_snapshot_bytes);
    assert_int_equal(c->raft_segment_bytes, d->raft_segment_bytes);
    assert_int_equal(c->max_batch_bytes, d->max_batch_bytes);
    assert_int_equal(c->join, d->join);
}

static void test_defaults(void **state)
{
    (void)state;
    struct tern_config c;
    tern_config_defaults(&c);
    assert_string_equal(c.listen, "127.0.0.1:1883");
    assert_string_equal(c.data_dir, "tern-data");
    assert_int_equal(c.log_level, TERN_LOG_INFO);
    assert_int_equal(c.node_id, 1);
    assert_int_equal(c.max_connections, 100000);
    assert_int_equal(c.max_packet_size, 1048576);
    assert_int_equal(c.receive_maximum, 1024);
    assert_int_equal(c.topic_alias_maximum, 64);
    assert_int_equal(c.max_keepalive_s, 65535);
    assert_int_equal(c.connect_timeout_ms, 10000);
    assert_int_equal(c.write_buffer_max, 16777216);
    assert_int_equal(c.retry_interval_s, 0);
    assert_int_equal(c.slow_subscriber_timeout_ms, 2000);
    assert_int_equal(c.max_qos, 2);
    assert_true(c.retain_available);
    assert_true(c.wildcard_subscriptions);
    assert_true(c.shared_subscriptions);
    assert_true(c.subscription_identifiers);
    assert_int_equal(c.client_id_max_len, 65535);
    assert_int_equal(c.limits.inflight_max, 32);
    assert_int_equal(c.limits.queue_max, 1000);
    assert_int_equal(c.limits.queue_bytes_max, 16 * 1024 * 1024);
    assert_false(c.limits.queue_qos0);
    assert_int_equal(c.limits.drop_policy, TERN_DROP_OLDEST);
    assert_int_equal(c.limits.retained_max, 100000);
    assert_int_equal(c.limits.retained_bytes_max, 256 * 1024 * 1024);
    assert_int_equal(c.limits.session_expiry_max_s, 0);
    assert_int_equal(c.limits.message_expiry_max_s, 0);
    assert_int_equal(c.limits.sessions_max, 1000000);
    assert_int_equal(c.raft_snapshot_threshold, 32768);
    assert_int_equal(c.raft_snapshot_bytes, 64 * 1024 * 1024);
    assert_int_equal(c.raft_segment_bytes, 32 * 1024 * 1024);
    assert_false(c.join);
}

static void test_limits_match_fsm(void **state)
{
    (void)state;
    struct tern_config c, d;
    tern_config_defaults(&c);
    tern_config_defaults(&d);
    tern_fsm_limits_default(&d.limits);
    assert_config_equal(&c, &d);
}

/* Every key with a non-default value, from a file... */
static const char all_keys_json[] =
    "{\n"
    "  \"listen\": \"[::1]:8883\",\n"
    "  \"data_dir\": \"/var/lib/tern\",\n"
    "  \"log_level\": \"debug\",\n"
    "  \"node_id\": 16777215,\n"
    "  \"max_connections\": 5,\n"
    "  \"max_packet_size\": 268435460,\n"
    "  \"receive_maximum\": 65535,\n"
    "  \"topic_alias_maximum\": 0,\n"
    "  \"max_keepalive_s\": 60,\n"
    "  \"connect_timeout_ms\": 3600000,\n"
    "  \"write_buffer_max\": 1099511627776,\n"
    "  \"retry_interval_s\": 30,\n"
    "  \"slow_subscriber_timeout_ms\": 750,\n"
    "  \"max_qos\": 1,\n"
    "  \"retain_available\": false,\n"
    "  \"wildcard_subscriptions\": false,\n"
    "  \"shared_subscriptions\": false,\n"
    "  \"subscription_identifiers\": false,\n"
    "  \"client_id_max_len\": 23,\n"
    "  \"admin_listen\": \"127.0.0.1:9091\",\n"
    "  \"sys_interval_s\": 3,\n"
    "  \"inflight_max\": 65535,\n"
    "  \"queue_max\": 1,\n"
    "  \"queue_bytes_max\": 1e3,\n"
    "  \"queue_qos0\": true,\n"
    "  \"drop_policy\": \"drop_new\",\n"
    "  \"retained_max\": 0,\n"
    "  \"retained_bytes_max\": 0,\n"
    "  \"session_expiry_max_s\": 4294967295,\n"
    "  \"message_expiry_max_s\": 86400,\n"
    "  \"sessions_max\": 7,\n"
    "  \"members\": [{\"id\": 2, \"raft\": \"10.0.0.2:7001\",\n"
    "    \"peer\": \"10.0.0.2:7101\", \"mqtt\": \"10.0.0.2:1883\"},\n"
    "    {\"id\": 3, \"raft\": \"10.0.0.3:7001\",\n"
    "    \"peer\": \"10.0.0.3:7101\", \"mqtt\": \"10.0.0.3:1883\"}],\n"
    "  \"raft_address\": \"127.0.0.1:7009\",\n"
    "  \"raft_election_timeout_ms\": 150,\n"
    "  \"raft_heartbeat_timeout_ms\": 15,\n"
    "  \"raft_snapshot_threshold\": 100,\n"
    "  \"raft_snapshot_trailing\": 10,\n"
    "  \"raft_snapshot_bytes\": 2097152,\n"
    "  \"raft_segment_bytes\": 4194304,\n"
    "  \"max_batch_bytes\": 65536,\n"
    "  \"join\": true,\n"
    "  \"listeners\": [{\"type\": \"mqtt\", \"bind\": \"0.0.0.0:1884\"},\n"
    "    {\"type\": \"mqtts\", \"bind\": \"[::]:8883\", \"cert_file\": \"s.pem\",\n"
    "     \"proxy_protocol\": true,\n"
    "     \"key_file\": \"s.key\", \"ca_file\": \"ca.pem\", \"crl_file\": \"crl.pem\",\n"
    "     \"require_certificate\": true, \"use_identity_as_username\": true,\n"
    "     \"ciphers\": \"ECDHE-RSA-AES128-GCM-SHA256\",\n"
    "     \"ciphersuites\": \"TLS_AES_128_GCM_SHA256\", \"tls_min_version\": \"1.3\"}],\n"
    "  \"tls_handshake_timeout_ms\": 2500,\n"
    "  \"proxy_header_timeout_ms\": 700,\n"
    "  \"ws_handshake_timeout_ms\": 3500,\n"
    "  \"ws_handshake_bytes_max\": 4096,\n"
    "  \"cluster_tls\": {\"cert_file\": \"n.pem\", \"key_file\": \"n.key\", \"ca_file\": "
    "\"ca.pem\"},\n"
    "  \"cluster_name\": \"blue\",\n"
    "  \"log_file\": \"/var/log/tern.log\",\n"
    "  \"password_file\": \"/etc/tern/passwd\",\n"
    "  \"allow_anonymous\": \"true\",\n"
    "  \"acl_file\": \"/etc/tern/acl\",\n"
    "  \"admin_token_file\": \"/etc/tern/admin-token\",\n"
    "  \"subscriptions_max\": 7,\n"
    "  \"connections_per_address_max\": 0,\n"
    "  \"connect_rate_per_address\": 4294967295,\n"
    "  \"admin_tls_cert_file\": \"/etc/tern/admin.pem\",\n"
    "  \"admin_tls_key_file\": \"/etc/tern/admin.key\",\n"
    "  \"admin_tls_ca_file\": \"/etc/tern/admin-ca.pem\",\n"
    "  \"publish_rate_max\": 50,\n"
    "  \"publish_rate_burst\": 200,\n"
    "  \"publish_quota_max\": 100000,\n"
    "  \"publish_quota_period_s\": 3600\n"
    "}\n";

/* ...and the same from the command line. */
static const char *const all_keys_set[][2] = {
    {"listen", "[::1]:8883"},
    {"data_dir", "/var/lib/tern"},
    {"log_level", "debug"},
    {"node_id", "16777215"},
    {"max_connections", "5"},
    {"max_packet_size", "268435460"},
    {"receive_maximum", "65535"},
    {"topic_alias_maximum", "0"},
    {"max_keepalive_s", "60"},
    {"connect_timeout_ms", "3600000"},
    {"write_buffer_max", "1099511627776"},
    {"retry_interval_s", "30"},
    {"slow_subscriber_timeout_ms", "750"},
    {"max_qos", "1"},
    {"retain_available", "false"},
    {"wildcard_subscriptions", "false"},
    {"shared_subscriptions", "false"},
    {"subscription_identifiers", "false"},
    {"client_id_max_len", "23"},
    {"admin_listen", "127.0.0.1:9091"},
    {"sys_interval_s", "3"},
    {"inflight_max", "65535"},
    {"queue_max", "1"},
    {"queue_bytes_max", "1000"},
    {"queue_qos0", "true"},
    {"drop_policy", "drop_new"},
    {"retained_max", "0"},
    {"retained_bytes_max", "0"},
    {"session_expiry_max_s", "4294967295"},
    {"message_expiry_max_s", "86400"},
    {"sessions_max", "7"},
    {"members", "2=10.0.0.2:7001/10.0.0.2:7101/10.0.0.2:1883,"
                "3=10.0.0.3:7001/10.0.0.3:7101/10.0.0.3:1883"},
    {"raft_address", "127.0.0.1:7009"},
    {"raft_election_timeout_ms", "150"},
    {"raft_heartbeat_timeout_ms", "15"},
    {"raft_snapshot_threshold", "100"},
    {"raft_snapshot_trailing", "10"},
    {"raft_snapshot_bytes", "2097152"},
    {"raft_segment_bytes", "4194304"},
    {"max_batch_bytes", "65536"},
    {"join", "true"},
    {"listeners",
     "[{\"type\": \"mqtt\", \"bind\": \"0.0.0.0:1884\"}, {\"type\": \"mqtts\", "
     "\"bind\": \"[::]:8883\", \"proxy_protocol\": true, \"cert_file\": \"s.pem\", "
     "\"key_file\": \"s.key\", "
     "\"ca_file\": \"ca.pem\", \"crl_file\": \"crl.pem\", \"require_certificate\": true, "
     "\"use_identity_as_username\": true, \"ciphers\": \"ECDHE-RSA-AES128-GCM-SHA256\", "
     "\"ciphersuites\": \"TLS_AES_128_GCM_SHA256\", \"tls_min_version\": \"1.3\"}]"},
    {"tls_handshake_timeout_ms", "2500"},
    {"proxy_header_timeout_ms", "700"},
    {"ws_handshake_timeout_ms", "3500"},
    {"ws_handshake_bytes_max", "4096"},
    {"cluster_tls", "{\"cert_file\": \"n.pem\", \"key_file\": \"n.key\", \"ca_file\": "
                    "\"ca.pem\"}"},
    {"cluster_name", "blue"},
    {"log_file", "/var/log/tern.log"},
    {"password_file", "/etc/tern/passwd"},
    {"allow_anonymous", "true"},
    {"acl_file", "/etc/tern/acl"},
    {"admin_token_file", "/etc/tern/admin-token"},
    {"subscriptions_max", "7"},
    {"connections_per_address_max", "0"},
    {"connect_rate_per_address", "4294967295"},
    {"admin_tls_cert_file", "/etc/tern/admin.pem"},
    {"admin_tls_key_file", "/etc/tern/admin.key"},
    {"admin_tls_ca_file", "/etc/tern/admin-ca.pem"},
    {"publish_rate_max", "50"},
    {"publish_rate_burst", "200"},
    {"publish_quota_max", "100000"},
    {"publish_quota_period_s", "3600"},
};

static void check_all_keys(const struct tern_config *c)
{
    assert_string_equal(c->listen, "[::1]:8883");
    assert_string_equal(c->data_dir, "/var/lib/tern");
    assert_int_equal(c->log_level, TERN_LOG_DEBUG);
    assert_int_equal(c->node_id, 16777215);
    assert_int_equal(c->max_connections, 5);
    assert_int_equal(c->max_packet_size, 268435460);
    assert_int_equal(c->receive_maximum, 65535);
    assert_int_equal(c->topic_alias_maximum, 0);
    assert_int_equal(c->max_keepalive_s, 60);
    assert_int_equal(c->connect_timeout_ms, 3600000);
    assert_true(c->write_buffer_max == UINT64_C(1099511627776));
    assert_int_equal(c->retry_interval_s, 30);
    assert_int_equal(c->slow_subscriber_timeout_ms, 750);
    assert_int_equal(c->max_qos, 1);
    assert_false(c->retain_available);
    assert_false(c->wildcard_subscriptions);
    assert_false(c->shared_subscriptions);
    assert_false(c->subscription_identifiers);
    assert_int_equal(c->client_id_max_len, 23);
    assert_string_equal(c->admin_listen, "127.0.0.1:9091");
    assert_int_equal(c->sys_interval_s, 3);
    assert_int_equal(c->limits.inflight_max, 65535);
    assert_int_equal(c->limits.queue_max, 1);
    assert_int_equal(c->limits.queue_bytes_max, 1000);
    assert_true(c->limits.queue_qos0);
    assert_int_equal(c->limits.drop_policy, TERN_DROP_NEW);
    assert_int_equal(c->limits.retained_max, 0);
    assert_int_equal(c->limits.retained_bytes_max, 0);
    assert_int_equal(c->limits.session_expiry_max_s, UINT32_MAX);
    assert_int_equal(c->limits.message_expiry_max_s, 86400);
    assert_int_equal(c->limits.sessions_max, 7);
    assert_int_equal(c->member_count, 2);
    assert_int_equal(c->members[0].id, 2);
    assert_string_equal(c->members[0].raft, "10.0.0.2:7001");
    assert_string_equal(c->members[1].peer, "10.0.0.3:7101");
    assert_string_equal(c->members[1].mqtt, "10.0.0.3:1883");
    assert_string_equal(c->raft_address, "127.0.0.1:7009");
    assert_int_equal(c->raft_election_timeout_ms, 150);
    assert_int_equal(c->raft_heartbeat_timeout_ms, 15);
    assert_int_equal(c->raft_snapshot_threshold, 100);
    assert_int_equal(c->raft_snapshot_trailing, 10);
    assert_int_equal(c->raft_snapshot_bytes, 2097152);
    assert_int_equal(c->raft_segment_bytes, 4194304);
    assert_int_equal(c->max_batch_bytes, 65536);
    assert_true(c->join);
    assert_int_equal(c->listener_count, 2);
    assert_int_equal(c->listeners[0].type, TERN_LISTENER_MQTT);
    assert_string_equal(c->listeners[0].bind, "0.0.0.0:1884");
    assert_false(c->listeners[0].proxy_protocol);
    const struct tern_listener_config *l = &c->listeners[1];
    assert_true(l->proxy_protocol);
    assert_int_equal(l->type, TERN_LISTENER_MQTTS);
    assert_string_equal(l->bind, "[::]:8883");
    assert_string_equal(l->cert_file, "s.pem");
    assert_string_equal(l->key_file, "s.key");
    assert_string_equal(l->ca_file, "ca.pem");
    assert_string_equal(l->crl_file, "crl.pem");
    assert_true(l->require_certificate);
    assert_true(l->use_identity_as_username);
    assert_string_equal(l->ciphers, "ECDHE-RSA-AES128-GCM-SHA256");
    assert_string_equal(l->ciphersuites, "TLS_AES_128_GCM_SHA256");
    assert_int_equal(l->tls_min_version, 1);
    assert_int_equal(c->tls_handshake_timeout_ms, 2500);
    assert_int_equal(c->proxy_header_timeout_ms, 700);
    assert_int_equal(c->ws_handshake_timeout_ms, 3500);
    assert_int_equal(c->ws_handshake_bytes_max, 4096);
    assert_string_equal(c->cluster_tls.cert_file, "n.pem");
    assert_string_equal(c->cluster_tls.key_file, "n.key");
    assert_string_equal(c->cluster_tls.ca_file, "ca.pem");
    assert_string_equal(c->cluster_name, "blue");
    assert_string_equal(c->log_file, "/var/log/tern.log");
    assert_string_equal(c->password_file, "/etc/tern/passwd");
    assert_int_equal(c->allow_anonymous, TERN_ANON_TRUE);
    assert_string_equal(c->acl_file, "/etc/tern/acl");
    assert_string_equal(c->admin_token_file, "/etc/tern/admin-token");
    assert_int_equal(c->subscriptions_max, 7);
    assert_int_equal(c->connections_per_address_max, 0);
    assert_int_equal(c->connect_rate_per_address, UINT32_MAX);
    assert_string_equal(c->admin_tls_cert_file, "/etc/tern/admin.pem");
    assert_string_equal(c->admin_tls_key_file, "/etc/tern/admin.key");
    assert_string_equal(c->admin_tls_ca_file, "/etc/tern/admin-ca.pem");
    assert_int_equal(c->publish_rate_max, 50);
    assert_int_equal(c->publish_rate_burst, 200);
    assert_int_equal(c->publish_quota_max, 100000);
    assert_int_equal(c->publish_quota_period_s, 3600);
}

static void test_every_key_from_json(void **state)
{
    (void)state;
    struct tern_config c;
    char errmsg[TERN_ERRMSG_SIZE] = "";
    tern_config_defaults(&c);
    int rc = load(&c, all_keys_json, errmsg);
    if (rc != TERN_OK)
        fail_msg("%s", errmsg);
    check_all_keys(&c);
}

static void test_every_key_from_set(void **state)
{
    (void)state;
    struct tern_config c;
    char errmsg[TERN_ERRMSG_SIZE] = "";
    assert_int_equal(sizeof all_keys_set / sizeof all_keys_set[0], NKEYS);
    tern_config_defaults(&c);
    for (size_t i = 0; i < NKEYS; i++) {
        int rc = tern_config_set(&c, all_keys_set[i][0], all_keys_set[i][1], errmsg);
        if (rc != TERN_OK)
            fail_msg("%s", errmsg);
    }
    check_all_keys(&c);
}

static void test_empty_object_keeps_values(void **state)
{
    (void)state;
    struct tern_config c, d;
    char errmsg[TERN_ERRMSG_SIZE];
    tern_config_defaults(&c);
    tern_config_defaults(&d);
    assert_int_equal(load(&c, " { } ", errmsg), TERN_OK);
    assert_config_equal(&c, &d);
}

static void test_range_errors(void **state)
{
    (void)state;
    /* The exact wording, once. */
    struct tern_config c;
    char errmsg[TERN_ERRMSG_SIZE];
    tern_config_defaults(&c);
    assert_int_equal(load(&c, "{\"inflight_max\": 0}", errmsg), TERN_EINVAL);
    assert_string_equal(errmsg,
                        "inflight_max: must be an integer from 1 to 65535, got 0");

    expect_json_error("{\"inflight_max\": 65536}", "inflight_max: must be an integer");
    expect_json_error("{\"max_packet_size\": 15}", "max_packet_size: must be an integer "
                                                   "from 16 to 268435460, got 15");
    expect_json_error("{\"max_packet_size\": 268435461}", "got 268435461");
    expect_json_error("{\"receive_maximum\": 0}", "receive_maximum: must be an integer "
                                                  "from 1 to 65535");
    expect_json_error("{\"max_qos\": 3}",
                      "max_qos: must be an integer from 0 to 2, got 3");
    expect_json_error("{\"node_id\": 0}", "node_id: must be an integer");
    expect_json_error("{\"node_id\": 4294967296}", "node_id:");
    /* Proposal ids keep 24 bits of the node id (tern/cmd.h): a larger id would
     * share its proposals' dedup window with another node's. */
    expect_json_error("{\"node_id\": 16777216}",
                      "node_id: must be an integer from 1 to 16777215, got 16777216");
    expect_set_error("node_id", "4294967295",
                     "node_id: must be an integer from 1 to 16777215, got 4294967295");
    expect_json_error("{\"members\": [{\"id\": 16777216, \"raft\": \"10.0.0.2:7001\", "
                      "\"peer\": \"10.0.0.2:7101\", \"mqtt\": \"10.0.0.2:1883\"}]}",
                      "members[0].id: must be an integer from 1 to 16777215");
    expect_set_error("members", "16777216=10.0.0.2:7001/10.0.0.2:7101/10.0.0.2:1883",
                     "members: node id 16777216 out of range (1 to 16777215)");
    expect_json_error("{\"client_id_max_len\": 22}", "client_id_max_len: must be");
    expect_json_error("{\"queue_max\": -1}", "queue_max: must be an integer from 1 to "
                                             "4294967295, got -1");
    expect_json_error("{\"write_buffer_max\": 1e300}", "write_buffer_max: must be");
    expect_json_error("{\"retained_bytes_max\": 1099511627777}", "retained_bytes_max:");
    expect_json_error(
        "{\"raft_segment_bytes\": 4096}",
        "raft_segment_bytes: must be an integer from 1048576 to 1073741824");
}

static void test_type_errors(void **state)
{
    (void)state;
    expect_json_error("{\"inflight_max\": 1.5}",
                      "inflight_max: must be an integer from 1 "
                      "to 65535, got 1.5");
    expect_json_error("{\"inflight_max\": \"50\"}",
                      "inflight_max: must be an integer from "
                      "1 to 65535, got \"50\"");
    expect_json_error("{\"inflight_max\": true}", "got true");
    expect_json_error("{\"inflight_max\": null}",
                      "inflight_max: must be an integer from 1 "
                      "to 65535, got null");
    expect_json_error("{\"inflight_max\": [1]}", "got an array");
    expect_json_error("{\"inflight_max\": {}}", "got an object");
    expect_json_error("{\"retain_available\": 1}", "retain_available: must be true or "
                                                   "false, got 1");
    expect_json_error("{\"queue_qos0\": \"true\"}",
                      "queue_qos0: must be true or false, got "
                      "\"true\"");
    expect_json_error("{\"data_dir\": 5}", "data_dir: must be a non-empty string");
    expect_json_error("{\"listen\": 1883}", "listen: must be HOST:PORT");
    expect_json_error("{\"log_level\": 3}",
                      "log_level: must be one of error, warn, info, "
                      "debug, got 3");
}

static void test_enum_errors(void **state)
{
    (void)state;
    expect_json_error(
        "{\"log_level\": \"verbose\"}",
        "log_level: must be one of error, warn, info, debug, got \"verbose\"");
    expect_json_error("{\"log_level\": \"INFO\"}", "log_level: must be one of");
    expect_json_error(
        "{\"drop_policy\": \"oldest\"}",
        "drop_policy: must be one of drop_oldest, drop_new, got \"oldest\"");
}

static void test_string_errors(void **state)
{
    (void)state;
    char long_dir[400];
    char json[500];
    memset(long_dir, 'd', 256);
    long_dir[256] = '\0';
    snprintf(json, sizeof json, "{\"data_dir\": \"%s\"}", long_dir);
    expect_json_error(json, "data_dir: must be a non-empty string of at most 255 bytes");
    expect_json_error(json, "...\""); /* the echo is cut short */
    expect_json_error("{\"data_dir\": \"\"}", "data_dir: must be a non-empty string");

    const char *bad_listen[] = {
        "\"\"",     "\"localhost\"", "\"localhost:\"", "\":1883\"", "\"h:70000\"",
        "\"h:-1\"", "\"::1:1883\"",  "\"[::1]\"",      "\"h:18x\"", "\"a b:1\""};
    for (size_t i = 0; i < sizeof bad_listen / sizeof bad_listen[0]; i++) {
        snprintf(json, sizeof json, "{\"listen\": %s}", bad_listen[i]);
        expect_json_error(json, "listen: must be HOST:PORT");
    }
}

static void test_unknown_and_duplicate_keys(void **state)
{
    (void)state;
    struct tern_config c;
    char errmsg[TERN_ERRMSG_SIZE];
    tern_config_defaults(&c);
    assert_int_equal(load(&c, "{\"inflght_max\": 5}", errmsg), TERN_EINVAL);
    assert_string_equal(errmsg,
                        "unknown key \"inflght_max\" (did you mean \"inflight_max\"?)");
    expect_json_error("{\"cluster\": {}}", "unknown key \"cluster\"");
    expect_json_error("{\"zzzzzzzzzzzzzz\": 1}", "unknown key \"zzzzzzzzzzzzzz\"");
    expect_json_error("{\"node_id\": 2, \"node_id\": 3}", "node_id: duplicate key");
    expect_set_error("inflght_max", "5", "unknown key \"inflght_max\"");
    expect_set_error("cluster", "x", "unknown key \"cluster\"");
}

static void test_json_syntax_errors(void **state)
{
    (void)state;
    expect_json_error("{\n  \"node_id\": 1,\n  \"listen\" \"x\"\n}",
                      "config: invalid JSON at line 3, column 12");
    expect_json_error("{\"node_id\": 1,}", "invalid JSON at line 1");
    expect_json_error("", "invalid JSON at line 1, column 1");
    expect_json_error("{\"node_id\": 1", "invalid JSON");
    expect_json_error("{} {}",
                      "unexpected text after the JSON object at line 1, column 4");
    expect_json_error("[1, 2]", "config: top level must be a JSON object");
    expect_json_error("42", "top level must be a JSON object");
}

static void test_error_changes_nothing(void **state)
{
    (void)state;
    struct tern_config c, d;
    char errmsg[TERN_ERRMSG_SIZE];
    tern_config_defaults(&c);
    tern_config_defaults(&d);
    /* The first key is valid, the second is not: neither is applied. */
    assert_int_equal(load(&c, "{\"node_id\": 9, \"max_qos\": 7}", errmsg), TERN_EINVAL);
    assert_config_equal(&c, &d);
    assert_int_equal(tern_config_set(&c, "node_id", "0", errmsg), TERN_EINVAL);
    assert_config_equal(&c, &d);
}

static void test_set_overrides_file(void **state)
{
    (void)state;
    struct tern_config c;
    char errmsg[TERN_ERRMSG_SIZE];
    tern_config_defaults(&c);
    assert_int_equal(load(&c, "{\"inflight_max\": 10, \"node_id\": 2}", errmsg), TERN_OK);
    assert_int_equal(tern_config_set(&c, "inflight_max", "50", errmsg), TERN_OK);
    assert_int_equal(c.limits.inflight_max, 50);
    assert_int_equal(c.node_id, 2);
    assert_int_equal(tern_config_set(&c, "retain_available", "false", errmsg), TERN_OK);
    assert_false(c.retain_available);
    assert_int_equal(tern_config_set(&c, "retain_available", "true", errmsg), TERN_OK);
    assert_true(c.retain_available);
    assert_int_equal(tern_config_set(&c, "log_level", "error", errmsg), TERN_OK);
    assert_int_equal(c.log_level, TERN_LOG_ERROR);
}

static void test_set_errors(void **state)
{
    (void)state;
    expect_set_error("inflight_max", "0",
                     "inflight_max: must be an integer from 1 to 65535, got 0");
    expect_set_error("inflight_max", "-1", "got -1");
    expect_set_error("publish_rate_max", "1000001",
                     "publish_rate_max: must be an integer from 0 to 1000000");
    expect_set_error("publish_rate_burst", "1000001",
                     "publish_rate_burst: must be an integer from 0 to 1000000");
    expect_set_error("publish_quota_period_s", "0",
                     "publish_quota_period_s: must be an integer from 1 to 31536000");
    expect_set_error("inflight_max", "1.5",
                     "inflight_max: must be an integer from 1 to "
                     "65535, got \"1.5\"");
    expect_set_error("inflight_max", "abc", "got \"abc\"");
    expect_set_error("inflight_max", "", "got \"\"");
    expect_set_error("inflight_max", " 5", "inflight_max: must be an integer");
    expect_set_error("inflight_max", "+5", "inflight_max: must be an integer");
    expect_set_error("inflight_max", "0x10", "inflight_max: must be an integer");
    expect_set_error("write_buffer_max", "99999999999999999999999",
                     "write_buffer_max: must be an integer");
    expect_set_error("write_buffer_max", "1099511627777", "write_buffer_max: must be");
    expect_set_error("queue_qos0", "yes",
                     "queue_qos0: must be true or false, got \"yes\"");
    expect_set_error("queue_qos0", "1", "queue_qos0: must be true or false, got 1");
    expect_set_error("queue_qos0", "TRUE", "queue_qos0: must be true or false");
    expect_set_error("log_level", "trace",
                     "log_level: must be one of error, warn, info, "
                     "debug, got \"trace\"");
    expect_set_error("listen", "nope", "listen: must be HOST:PORT");
    expect_set_error("data_dir", "", "data_dir: must be a non-empty string");

    struct tern_config c;
    char errmsg[TERN_ERRMSG_SIZE];
    tern_config_defaults(&c);
    assert_int_equal(tern_config_set(&c, NULL, "1", errmsg), TERN_EINVAL);
    assert_int_equal(tern_config_set(&c, "node_id", NULL, errmsg), TERN_EINVAL);
}

static void test_log_level_name(void **state)
{
    (void)state;
    assert_string_equal(tern_log_level_name(TERN_LOG_ERROR), "error");
    assert_string_equal(tern_log_level_name(TERN_LOG_WARN), "warn");
    assert_string_equal(tern_log_level_name(TERN_LOG_INFO), "info");
    assert_string_equal(tern_log_level_name(TERN_LOG_DEBUG), "debug");
    assert_string_equal(tern_log_level_name(-1), "unknown");
    assert_string_equal(tern_log_level_name(4), "unknown");
}

static void test_strerror(void **state)
{
    (void)state;
    for (int e = TERN_OK; e <= TERN_EUNSUPPORTED; e++) {
        const char *s = tern_strerror(e);
        assert_non_null(s);
        assert_string_not_equal(s, "unknown error");
        for (int f = TERN_OK; f < e; f++)
            assert_string_not_equal(s, tern_strerror(f));
    }
    assert_string_equal(tern_strerror(-1), "unknown error");
    assert_string_equal(tern_strerror(99), "unknown error");
}

/* The repository root, from this file's path (tests/unit/test_config.c). */
static void repo_path(const char *rel, char *out, size_t cap)
{
    const char *file = __FILE__;
    const char *tail = strstr(file, "tests/unit/test_config.c");
    assert_non_null(tail);
    snprintf(out, cap, "%.*s%s", (int)(tail - file), file, rel);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static void test_load_file(void **state)
{
    (void)state;
    char path[] = "/tmp/tern_test_config_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    fputs("{\"node_id\": 3,\n \"max_qos\": 9}\n", f);
    fclose(f);

    struct tern_config c;
    char errmsg[TERN_ERRMSG_SIZE];
    tern_config_defaults(&c);
    assert_int_equal(tern_config_load_file(&c, path, errmsg), TERN_EINVAL);
    assert_non_null(strstr(errmsg, path)); /* which file */
    assert_non_null(strstr(errmsg, ": max_qos: must be an integer from 0 to 2, got 9"));

    f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"node_id\": 3}", f);
    fclose(f);
    assert_int_equal(tern_config_load_file(&c, path, errmsg), TERN_OK);
    assert_int_equal(c.node_id, 3);
    unlink(path);

    assert_int_equal(tern_config_load_file(&c, path, errmsg), TERN_EIO);
    assert_non_null(strstr(errmsg, "cannot open"));
}

/* deploy/ternd.example.json holds every key at its default. */
static void test_example_file_is_defaults(void **state)
{
    (void)state;
    char path[1024];
    struct tern_config c, d;
    char errmsg[TERN_ERRMSG_SIZE];
    repo_path("deploy/ternd.example.json", path, sizeof path);
    /* Garbage first: only a file naming every key can turn it into the defaults. */
    memset(&c, 0x55, sizeof c);
    int rc = tern_config_load_file(&c, path, errmsg);
    if (rc != TERN_OK)
        fail_msg("%s", errmsg);
    tern_config_defaults(&d);
    assert_config_equal(&c, &d);
    /* ... and names each one, as it says (a key left out would load its default
     * too and go unnoticed above). */
    const char *text = slurp(path);
    char quoted[64];
    for (size_t i = 0; i < NKEYS; i++) {
        snprintf(quoted, sizeof quoted, "\"%s\"", all_keys[i]);
        if (!strstr(text, quoted))
            fail_msg("deploy/ternd.example.json does not name %s", quoted);
    }
}

/* Member lists: each mistake names the member and its field. */
static void test_members_errors(void **state)
{
    (void)state;
    expect_json_error("{\"members\": 5}", "members: must be an array");
    expect_json_error(
        "{\"members\": [{\"id\": 0, \"raft\": \"10.0.0.1:1\", \"peer\": \"10.0.0.1:2\","
        " \"mqtt\": \"10.0.0.1:3\"}]}",
        "members[0].id");
    expect_json_error("{\"members\": [{\"id\": 1, \"peer\": \"10.0.0.1:2\", \"mqtt\": "
                      "\"10.0.0.1:3\"}]}",
                      "members[0].raft");
    expect_json_error(
        "{\"members\": [{\"id\": 1, \"raft\": \"10.0.0.1:1\", \"peer\": \"10.0.0.1:2\","
        " \"mqtt\": \"10.0.0.1:3\"}, {\"id\": 1, \"raft\": \"10.0.0.2:1\", \"peer\": "
        "\"10.0.0.2:2\","
        " \"mqtt\": \"10.0.0.2:3\"}]}",
        "members[1].id: duplicate");
    expect_json_error(
        "{\"members\": [{\"id\": 1, \"raft\": \"node1:7001\", \"peer\": \"10.0.0.1:2\","
        " \"mqtt\": \"10.0.0.1:3\"}]}",
        "members[0].raft: must be \"IPV4:PORT\"");
    struct tern_config c;
    char errmsg[TERN_ERRMSG_SIZE] = "";
    tern_config_defaults(&c);
    assert_int_equal(tern_config_set(&c, "members", "1=a:1/a:2", errmsg), TERN_EINVAL);
    assert_non_null(strstr(errmsg, "members: expected ID=RAFT/PEER/MQTT"));
}

/* cluster_tls: an object of file names, all three required, {} = unset. */
static void test_cluster_tls(void **state)
{
    (void)state;
    struct tern_config c;
    char errmsg[TERN_ERRMSG_SIZE] = "";
    tern_config_defaults(&c);
    assert_string_equal(c.cluster_tls.cert_file, "");
    assert_int_equal(
        load(&c,
             "{\"cluster_tls\": {\"cert_file\": \"n.pem\", \"key_file\": "
             "\"n.key\", \"ca_file\": \"ca.pem\", \"crl_file\": \"crl.pem\"}}",
             errmsg),
        TERN_OK);
    assert_string_equal(c.cluster_tls.cert_file, "n.pem");
    assert_string_equal(c.cluster_tls.key_file, "n.key");
    assert_string_equal(c.cluster_tls.ca_file, "ca.pem");
    assert_string_equal(c.cluster_tls.crl_file, "crl.pem");
    char *out = tern_config_to_json(&c);
    assert_non_null(strstr(out, "\"cert_file\":\t\"n.pem\""));
    free(out);
    assert_int_equal(load(&c, "{\"cluster_tls\": {}}", errmsg), TERN_OK);
    assert_string_equal(c.cluster_tls.cert_file, "");
    assert_int_equal(tern_config_set(&c, "cluster_tls",
                                     "{\"cert_file\": \"a\", \"key_file\": \"b\", "
                                     "\"ca_file\": \"c\"}",
                                     errmsg),
                     TERN_OK);
    assert_string_equal(c.cluster_tls.ca_file, "c");
    expect_json_error("{\"cluster_tls\": []}", "cluster_tls: must be an object");
    expect_json_error("{\"cluster_tls\": {\"cert\": \"a\"}}",
                      "cluster_tls: unknown key \"cert\"");
    expect_json_error("{\"cluster_tls\": {\"cert_file\": \"a\", \"key_file\": \"b\"}}",
                      "cluster_tls.ca_file: required");
    expect_json_error("{\"cluster_tls\": {\"cert_file\": \"\", \"key_file\": \"b\", "
                      "\"ca_file\": \"c\"}}",
                      "cluster_tls.cert_file: must be a non-empty string");
    expect_json_error("{\"cluster_tls\": {\"cert_file\": \"a\", \"cert_file\": \"a\", "
                      "\"key_file\": \"b\", \"ca_file\": \"c\"}}",
                      "cluster_tls.cert_file: duplicate key");
    expect_set_error("cluster_tls", "nope", "cluster_tls: must be a JSON object");
}

/* Listeners: each mistake names the listener and its field; addresses are
 * distinct across listen and listeners. */
static void test_listeners_errors(void **state)
{
    (void)state;
    expect_json_error("{\"listeners\": {}}", "listeners: must be an array");
    expect_json_error("{\"listeners\": [5]}", "listeners[0]: must be an object");
    expect_json_error("{\"listeners\": [{\"bind\": \"127.0.0.1:1\"}]}",
                      "listeners[0].type: must be one of \"mqtt\", \"mqtts\"");
    expect_json_error(
        "{\"listeners\": [{\"type\": \"http\", \"bind\": \"127.0.0.1:1\"}]}",
        "listeners[0].type: must be one of \"mqtt\", \"mqtts\", \"ws\", \"wss\"");
    expect_json_error("{\"listeners\": [{\"type\": \"mqtt\"}]}",
                      "listeners[0].bind: must be HOST:PORT");
    expect_json_error("{\"listeners\": [{\"type\": \"mqtt\", \"bind\": \"x:99999\"}]}",
                      "listeners[0].bind: must be HOST:PORT");
    expect_json_error(
        "{\"listeners\": [{\"type\": \"mqtt\", \"bind\": \"127.0.0.1:1\", \"crt\": 1}]}",
        "listeners[0]: unknown key \"crt\"");
    expect_json_error("{\"listeners\": [{\"type\": \"mqtt\", \"bind\": \"127.0.0.1:1\", "
                      "\"proxy_protocol\": \"yes\"}]}",
                      "listeners[0].proxy_protocol: must be true or false");
    expect_json_error("{\"listeners\": [{\"type\": \"mqtt\", \"bind\": \"127.0.0.1:1\", "
                      "\"cert_file\": \"a\"}]}",
                      "listeners[0].cert_file: only for an mqtts or wss listener");
    expect_json_error("{\"listeners\": [{\"type\": \"mqtts\", \"bind\": \"127.0.0.1:1\", "
                      "\"key_file\": \"k\"}]}",
                      "listeners[0].cert_file: required for a TLS listener");
    expect_json_error(
        "{\"listeners\": [{\"type\": \"mqtts\", \"bind\": \"127.0.0.1:1\", "
        "\"cert_file\": \"c\", \"key_file\": \"k\", \"require_certificate\": 1}]}",
        "listeners[0].require_certificate: must be true or false");
    expect_json_error(
        "{\"listeners\": [{\"type\": \"mqtts\", \"bind\": \"127.0.0.1:1\", "
        "\"cert_file\": \"c\", \"key_file\": \"k\", \"require_certificate\": "
        "true}]}",
        "listeners[0].require_certificate: needs ca_file");
    expect_json_error("{\"listeners\": [{\"type\": \"mqtts\", \"bind\": \"127.0.0.1:1\", "
                      "\"cert_file\": \"c\", \"key_file\": \"k\", \"ca_file\": \"a\", "
                      "\"use_identity_as_username\": true}]}",
                      "listeners[0].use_identity_as_username: needs require_certificate");
    expect_json_error("{\"listeners\": [{\"type\": \"mqtts\", \"bind\": \"127.0.0.1:1\", "
                      "\"cert_file\": \"c\", \"key_file\": \"k\", \"tls_min_version\": "
                      "\"1.1\"}]}",
                      "listeners[0].tls_min_version: must be one of \"1.2\", \"1.3\"");
    expect_json_error("{\"listeners\": [{\"type\": \"mqtt\", \"bind\": \"127.0.0.1:1\", "
                      "\"type\": \"mqtt\"}]}",
                      "listeners[0].type: duplicate key");
    expect_set_error("listeners", "[{", "listeners: must be a JSON array");

    struct tern_config c;
    char errmsg[TERN_ERRMSG_SIZE] = "";
    tern_config_defaults(&c);
    assert_int_equal(load(&c,
                          "{\"listen\": \"127.0.0.1:1883\", \"listeners\": [{\"type\": "
                          "\"mqtt\", \"bind\": \"127.0.0.1:1884\"}, {\"type\": \"mqtt\", "
                          "\"bind\": \"127.0.0.1:1884\"}]}",
                          errmsg),
                     TERN_OK);
    assert_int_equal(tern_config_check(&c, errmsg), TERN_EINVAL);
    assert_non_null(strstr(errmsg, "listeners[1].bind: duplicate of listeners[0].bind"));
    assert_int_equal(
        tern_config_set(&c, "listeners",
                        "[{\"type\": \"mqtt\", \"bind\": \"127.0.0.1:1883\"}]", errmsg),
        TERN_OK);
    assert_int_equal(tern_config_check(&c, errmsg), TERN_EINVAL);
    assert_non_null(
        strstr(errmsg, "listeners[0].bind: \"127.0.0.1:1883\" is the address of listen"));
    /* listen "none": only the listeners, and there must be one. */
    assert_int_equal(tern_config_set(&c, "listen", "none", errmsg), TERN_OK);
    assert_int_equal(tern_config_check(&c, errmsg), TERN_OK);
    assert_int_equal(tern_config_set(&c, "listeners", "[]", errmsg), TERN_OK);
    assert_int_equal(tern_config_check(&c, errmsg), TERN_EINVAL);
    assert_non_null(strstr(errmsg, "listen: \"none\" and no listeners"));
    tern_config_defaults(&c);
    assert_int_equal(tern_config_check(&c, errmsg), TERN_OK);
}

/* Issue 18: ws and wss listeners, path and allowed_origins. */
static void test_listeners_ws(void **state)
{
    (void)state;
    struct tern_config c;
    char errmsg[TERN_ERRMSG_SIZE] = "";
    tern_config_defaults(&c);
    assert_int_equal(c.ws_handshake_timeout_ms, 10000);
    assert_int_equal(c.ws_handshake_bytes_max, 8192);
    assert_int_equal(
        load(
            &c,
            "{\"ws_handshake_timeout_ms\": 3000, \"ws_handshake_bytes_max\": 2048, "
            "\"listeners\": [{\"type\": \"ws\", \"bind\": \"127.0.0.1:8080\"}, "
            "{\"type\": \"wss\", \"bind\": \"127.0.0.1:8443\", \"cert_file\": \"s.pem\", "
            "\"key_file\": \"s.key\", \"path\": \"/ws/mqtt\", \"allowed_origins\": "
            "[\"https://a.example\", \"http://localhost:3000\"]}]}",
            errmsg),
        TERN_OK);
    assert_int_equal(c.ws_handshake_timeout_ms, 3000);
    assert_int_equal(c.ws_handshake_bytes_max, 2048);
    assert_int_equal(c.listeners[0].type, TERN_LISTENER_WS);
    assert_string_equal(c.listeners[0].path, "/mqtt"); /* the default */
    assert_int_equal(c.listeners[0].origin_count, 0);
    assert_int_equal(c.listeners[1].type, TERN_LISTENER_WSS);
    assert_string_equal(c.listeners[1].path, "/ws/mqtt");
    assert_string_equal(c.listeners[1].cert_file, "s.pem");
    assert_int_equal(c.listeners[1].origin_count, 2);
    assert_string_equal(c.listeners[1].origins[1], "http://localhost:3000");
    /* What --print-config shows loads back the same. */
    char *dump = tern_config_to_json(&c);
    assert_non_null(dump);
    struct tern_config d;
    tern_config_defaults(&d);
    assert_int_equal(load(&d, dump, errmsg), TERN_OK);
    free(dump);
    assert_string_equal(d.listeners[1].path, "/ws/mqtt");
    assert_int_equal(d.listeners[1].origin_count, 2);
    assert_string_equal(d.listeners[1].origins[0], "https://a.example");
    assert_string_equal(d.listeners[0].path, "/mqtt");

    expect_json_error("{\"listeners\": [{\"type\": \"wss\", \"bind\": \"127.0.0.1:1\"}]}",
                      "listeners[0].cert_file: required for a TLS listener");
    expect_json_error("{\"listeners\": [{\"type\": \"ws\", \"bind\": \"127.0.0.1:1\", "
                      "\"cert_file\": \"c\"}]}",
                      "listeners[0].cert_file: only for an mqtts or wss listener");
    expect_json_error("{\"listeners\": [{\"type\": \"mqtts\", \"bind\": \"127.0.0.1:1\", "
                      "\"cert_file\": \"c\", \"key_file\": \"k\", \"path\": \"/m\"}]}",
                      "listeners[0].path: only for a ws or wss listener");
    expect_json_error("{\"listeners\": [{\"type\": \"ws\", \"bind\": \"127.0.0.1:1\", "
                      "\"path\": \"mqtt\"}]}",
                      "listeners[0].path: must start with \"/\"");
    expect_json_error("{\"listeners\": [{\"type\": \"ws\", \"bind\": \"127.0.0.1:1\", "
                      "\"path\": \"/a b\"}]}",
                      "listeners[0].path: must start with \"/\"");
    expect_json_error("{\"listeners\": [{\"type\": \"ws\", \"bind\": \"127.0.0.1:1\", "
                      "\"allowed_origins\": \"https://a\"}]}",
                      "listeners[0].allowed_origins: must be an array of");
    expect_json_error("{\"listeners\": [{\"type\": \"ws\", \"bind\": \"127.0.0.1:1\", "
                      "\"allowed_origins\": [\"\"]}]}",
                      "listeners[0].allowed_origins: must be an array of");
    expect_json_error("{\"ws_handshake_bytes_max\": 100}",
                      "ws_handshake_bytes_max: must be an integer from 1024 to 65536");
}

/* Issue 17: checks across keys, the cluster id, members' strictness. */
static void test_check_and_cluster_id(void **state)
{
    (void)state;
    struct tern_config a, b;
    char errmsg[TERN_ERRMSG_SIZE] = "", ida[17], idb[17];
    tern_config_defaults(&a);
    assert_int_equal(tern_config_check(&a, errmsg), TERN_OK);
    tern_config_cluster_id(&a, ida);
    assert_string_equal(ida, ""); /* a single node: made at the first start */
    assert_int_equal(tern_config_set(&a, "members",
                                     "1=10.0.0.1:1/10.0.0.1:2/10.0.0.1:3,"
                                     "2=10.0.0.2:1/10.0.0.2:2/10.0.0.2:3",
                                     errmsg),
                     TERN_OK);
    assert_int_equal(tern_config_check(&a, errmsg), TERN_OK);
    /* The same members in another order: the same id; another name: another. */
    tern_config_defaults(&b);
    assert_int_equal(tern_config_set(&b, "members",
                                     "2=10.0.0.2:1/10.0.0.2:2/10.0.0.2:3,"
                                     "1=10.0.0.1:1/10.0.0.1:2/10.0.0.1:3",
                                     errmsg),
                     TERN_OK);
    tern_config_cluster_id(&a, ida);
    tern_config_cluster_id(&b, idb);
    assert_int_equal(strlen(ida), 16);
    assert_string_equal(ida, idb);
    assert_int_equal(tern_config_set(&b, "cluster_name", "other", errmsg), TERN_OK);
    tern_config_cluster_id(&b, idb);
    assert_string_not_equal(ida, idb);
    /* node_id not among the members, unless joining. */
    assert_int_equal(tern_config_set(&a, "node_id", "3", errmsg), TERN_OK);
    assert_int_equal(tern_config_check(&a, errmsg), TERN_EINVAL);
    assert_non_null(strstr(errmsg, "node_id 3 is not in members (ids 1, 2)"));
    assert_int_equal(tern_config_set(&a, "join", "true", errmsg), TERN_OK);
    assert_int_equal(tern_config_check(&a, errmsg), TERN_OK);
    /* Host names are not addresses. */
    assert_int_equal(tern_config_set(&a, "admin_listen", "localhost:1", errmsg), TERN_OK);
    assert_int_equal(tern_config_check(&a, errmsg), TERN_EINVAL);
    assert_non_null(strstr(errmsg, "admin_listen: must be an IP address"));
    expect_json_error(
        "{\"members\": [{\"id\": 1, \"raft\": \"10.0.0.1:1\", \"peer\": \"10.0.0.1:2\","
        " \"mqtt\": \"10.0.0.1:3\", \"mqqt\": \"x\"}]}",
        "members[0]: unknown key \"mqqt\"");
}

/* docs/configuration.md names every key as `key`. */
static void test_docs_name_every_key(void **state)
{
    (void)state;
    char path[1024], quoted[64];
    repo_path("docs/configuration.md", path, sizeof path);
    const char *doc = slurp(path);
    for (size_t i = 0; i < NKEYS; i++) {
        snprintf(quoted, sizeof quoted, "`%s`", all_keys[i]);
        if (!strstr(doc, quoted))
            fail_msg("docs/configuration.md does not document %s", quoted);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_members_errors),
        cmocka_unit_test(test_listeners_errors),
        cmocka_unit_test(test_listeners_ws),
        cmocka_unit_test(test_cluster_tls),
        cmocka_unit_test(test_limits_match_fsm),
        cmocka_unit_test(test_every_key_from_json),
        cmocka_unit_test(test_every_key_from_set),
        cmocka_unit_test(test_empty_object_keeps_values),
        cmocka_unit_test(test_range_errors),
        cmocka_unit_test(test_type_errors),
        cmocka_unit_test(test_enum_errors),
        cmocka_unit_test(test_string_errors),
        cmocka_unit_test(test_unknown_and_duplicate_keys),
        cmocka_unit_test(test_json_syntax_errors),
        cmocka_unit_test(test_error_changes_nothing),
        cmocka_unit_test(test_set_overrides_file),
        cmocka_unit_test(test_set_errors),
        cmocka_unit_test(test_log_level_name),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_example_file_is_defaults),
        cmocka_unit_test(test_docs_name_every_key),
        cmocka_unit_test(test_check_and_cluster_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
