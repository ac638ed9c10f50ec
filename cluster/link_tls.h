/* Mutual TLS on node-to-node connections (Raft transport and peer links).
 *
 * A connection is taken over once its TCP connection is made (or accepted):
 * the TLS handshake runs here with the TLS engine over memory BIOs
 * (include/tls/tern/tls.h: the cluster layer includes no OpenSSL header), the peer's
 * certificate must chain to the cluster CA and name a node ("node-N" as its
 * subject CN), and then the owner gets the plaintext end of a socketpair. It
 * reads and writes that end as it would the TCP stream; this module moves the
 * bytes between the socketpair and the TCP connection, encrypting and
 * decrypting, as the Raft transport's pump does for plain connections. Either
 * side closing closes the other.
 *
 * Why a socketpair: libraft reads and writes a uv_stream_t it is given and
 * frees it itself, so the plaintext has to be a real stream; the peer links use
 * the same seam, so there is one TLS path for the four kinds of connection.
 *
 * The identity check: both sides present a certificate the cluster CA signed,
 * and its CN is "node-N". A client checks that N is the node it dialled; a
 * server learns N and its owner checks it against what the peer claims (the
 * Raft handshake's server id, the peer frames' sender). So a node's certificate
 * cannot be used to speak for another node, and a certificate of another CA,
 * none, or plain TCP gets no further than the handshake. */
#ifndef TERN_LINK_TLS_H
#define TERN_LINK_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

/* Accepted connections may take this long from accept to the end of the
 * handshake (a plain TCP client that sends nothing is closed then). */
#define TERN_LINK_TLS_HANDSHAKE_MS 3000

struct tern_tls_ctx;
struct tern_link_tls;

/* The files of cluster_tls (docs/configuration.md). */
struct tern_link_tls_files {
    const char *cert_file; /* this node's chain, leaf CN "node-N" */
    const char *key_file;
    const char *ca_file;  /* the cluster CA: peers' certificates chain to it */
    const char *crl_file; /* optional: revoked node certificates */
};

/* This node's contexts, both directions; replaced on reload (connections made
 * before keep theirs). Owned by the cluster. */
struct tern_link_creds {
    struct tern_tls_ctx *server; /* accepted connections: a certificate required */
    struct tern_tls_ctx *client; /* outgoing: the server's certificate checked */
};

/* Makes both contexts from the files; on success the old ones in c are freed
 * and replaced, on error c is unchanged and errmsg says why ("cluster_tls.
 * key_file: ..."). */
int tern_link_creds_load(struct tern_link_creds *c, const struct tern_link_tls_files *f,
                         char *errmsg);
void tern_link_creds_free(struct tern_link_creds *c);

/* The TLS connections of one owner (the Raft transport, the peer links). */
struct tern_link_tls_set {
    struct tern_link_tls *head;
    size_t handshaking; /* not established yet */
    uint64_t failures;  /* handshakes failed or timed out, identity refused */
    uint64_t logged_ms;
    uint64_t unlogged; /* failures since the last line logged */
    const char *what;  /* "raft", "peer": starts every log line */
};

/* status 0: fd is the plaintext end (the owner's: uv_pipe_open it, or close it)
 * and peer_id the node the certificate names. Otherwise the handshake failed
 * (logged, counted), fd is -1 and the connection is closing. Not called after
 * tern_link_tls_cancel or tern_link_tls_close_all. */
typedef void (*tern_link_tls_cb)(void *data, int status, int fd, uint32_t peer_id);

struct tern_link_tls_opts {
    struct tern_tls_ctx *ctx; /* creds.server or creds.client */
    uint32_t expect_id;       /* client: the node dialled; server: 0 */
    uint64_t timeout_ms;      /* handshake */
    size_t unsent_max;        /* ciphertext unsent on TCP before: */
    bool close_when_full;     /* ... closing (Raft) or else not reading (peer) */
    void (*free_tcp)(void *); /* frees tcp once closed */
};

/* Takes tcp (connected or accepted, not reading). On error (out of memory)
 * returns NULL, tcp is being closed, and cb never runs. */
struct tern_link_tls *tern_link_tls_start(struct tern_link_tls_set *set, uv_loop_t *loop,
                                          uv_tcp_t *tcp,
                                          const struct tern_link_tls_opts *o,
                                          tern_link_tls_cb cb, void *data);
/* Encrypts and writes onto TCP, now, whatever the owners have written to their
 * ends of the set's established connections (otherwise that waits for the
 * loop's next poll phase): the peer links call it after each flush, so a
 * forwarded message is in the kernel's TCP buffer before the publisher's ack
 * that follows it, as over plain TCP (node.c on_flush) - bytes still in a
 * socketpair die with the process. */
void tern_link_tls_flush_all(struct tern_link_tls_set *set);
/* Closes one connection whose callback has not run yet; it never will. */
void tern_link_tls_cancel(struct tern_link_tls *l);
/* Closes every connection of the set (at shutdown). No callbacks after. */
void tern_link_tls_close_all(struct tern_link_tls_set *set);

/* "node-N" -> N; 0 when the name is not of that form (or N is 0). */
uint32_t tern_link_tls_node_of(const char *cn);

#endif
