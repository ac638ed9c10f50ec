/* A digest of the replicated state (tern_cluster_state_digest, tern/cluster.h):
 * the CRC32C of its snapshot bytes, which are the same on every replica at the
 * same applied index (cluster/fsm_snap.c). Serialised by a forked child as the
 * snapshots are (snap_fork.h), collected on a thread-pool thread, so asking
 * for it stops the loop only for fork(), whatever the state's size. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "cluster_internal.h"
#include "snap_fork.h"
#include "tern/cluster.h"
#include "tern/error.h"
#include "tern/storage.h"

#define DIGEST_SILENCE_MS 30000

struct digest_job {
    uv_work_t work;
    struct tern_snapfork child;
    struct tern_snapfork_handle handle; /* to end the child from the loop */
    struct tern_cluster *cluster;
    struct digest_job *next;
    tern_digest_cb cb;
    void *ctx;
    uint64_t index; /* applied when forked: the state the child holds */
    int rc;
    uint32_t crc;
    uint64_t bytes;
    char errmsg[TERN_ERRMSG_SIZE];
};

static void digest_work(uv_work_t *w)
{
    struct digest_job *j = w->data;
    uint8_t *data;
    size_t len;
    j->rc = tern_snapfork_collect(&j->child, &data, &len, DIGEST_SILENCE_MS, j->errmsg);
    if (j->rc != TERN_OK)
        return;
    j->crc = tern_crc32c(0, data, len);
    j->bytes = len;
    free(data);
}

static void digest_done(uv_work_t *w, int status)
{
    struct digest_job *j = w->data;
    (void)status; /* never cancelled */
    for (struct digest_job **p = &j->cluster->digests; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            break;
        }
    tern_snapfork_handle_close(&j->handle);
    j->cb(j->ctx, j->rc, j->index, j->crc, j->bytes, j->errmsg);
    free(j);
}

int tern_cluster_state_digest(struct tern_cluster *c, uv_loop_t *loop, tern_digest_cb cb,
                              void *ctx, char *errmsg)
{
    struct digest_job *j = calloc(1, sizeof(*j));
    if (!j) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "out of memory");
        return TERN_ENOMEM;
    }
    struct tern_cluster_status st;
    tern_cluster_status(c, &st);
    j->index = st.applied_index;
    j->cb = cb;
    j->ctx = ctx;
    j->work.data = j;
    int rc = tern_snapfork_start(&j->child, tern_cluster_fsm(c), errmsg);
    if (rc != TERN_OK) {
        free(j);
        return rc;
    }
    tern_snapfork_handle_open(&j->handle, &j->child);
    int uv = uv_queue_work(loop, &j->work, digest_work, digest_done);
    if (uv != 0) {
        tern_snapfork_handle_close(&j->handle);
        tern_snapfork_abort(&j->child);
        snprintf(errmsg, TERN_ERRMSG_SIZE, "uv_queue_work: %s", uv_strerror(uv));
        free(j);
        return TERN_EIO;
    }
    j->cluster = c;
    j->next = c->digests;
    c->digests = j;
    return TERN_OK;
}

void cluster_digests_kill(struct tern_cluster *c)
{
    for (struct digest_job *j = c->digests; j; j = j->next)
        tern_snapfork_handle_kill(&j->handle); /* its thread reads EOF, and returns */
}
