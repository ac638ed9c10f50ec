/* ternctl: command-line client of a node's admin HTTP API (docs/operations.md).
 *
 *   ternctl [--admin HOST:PORT[,HOST:PORT...]] [--json] COMMAND [ARGS]
 *
 * One HTTP/1.1 request per command over a plain blocking socket (10 s timeouts,
 * add-node 60 s),
 * the JSON answer printed as an aligned table, or as is with --json (errors
 * too). The address comes from --admin, else $TERN_ADMIN, else 127.0.0.1:8081;
 * a list is tried in turn, and a write refused by a follower is sent again to
 * the leader (its admin address from /cluster, or the list). Options may
 * appear anywhere on the line.
 * Exit status: 0 done, 1 node unreachable or the API refused (its error is
 * printed), 2 usage error.
 *
 * Over 800 lines on purpose: one table of commands, each a few lines of request
 * and table layout; passwd.c and https.c are apart because they do something else.
 */
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "ctl.h"

#ifndef TERN_VERSION
#define TERN_VERSION "dev"
#endif

#define DEFAULT_ADMIN "127.0.0.1:8081"
#define IO_TIMEOUT_S 10
/* POST /members answers once the node has caught up: up to five of libraft's 5 s
 * catch-up rounds for a large state (docs/operations.md, "Adding a node"). */
#define ADD_NODE_TIMEOUT_S 60
#define RESPONSE_MAX (64u * 1024 * 1024)
#define EXIT_FAIL 1
#define EXIT_USAGE 2
#define ADDRS_MAX 16

struct ctl {
    const char *admin; /* the address in use, for messages */
    char host[256];
    char port[8];
    bool json;
    char addrs[ADDRS_MAX][272]; /* --admin / TERN_ADMIN, comma-separated */
    int naddrs;
    double wait_ready_s;                /* status --wait-ready; < 0: not given */
    bool quiet;                         /* probing: fail() prints nothing */
    const char *prefix, *after, *limit; /* lists: one page */
    const char *after2;                 /* --after-filter / --after-peer */
    bool all;                           /* --all: follow the cursors */
    char token[600];        /* bearer token, "" = none (--token-file, TERN_ADMIN_TOKEN) */
    const char *admins[16]; /* every --admin given: status compares their files */
    int nadmins;
    struct ctl_tls tls; /* --ca-file: HTTPS */
    int io_timeout_s;   /* each socket step; IO_TIMEOUT_S unless a command needs longer */
};

/* An error: to stderr, or with --json as {"error", "status"[, "leader"]} on stdout,
 * so scripts parse one format. status 0: no HTTP answer. */
static void fail(const struct ctl *ctl, int status, double leader, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    if (ctl->quiet)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (!ctl->json) {
        if (status)
            fprintf(stderr, "ternctl: %s (HTTP %d)\n", msg, status);
        else
            fprintf(stderr, "ternctl: %s\n", msg);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", msg);
    cJSON_AddNumberToObject(o, "status", status);
    if (leader > 0)
        cJSON_AddNumberToObject(o, "leader", leader);
    char *t = cJSON_PrintUnformatted(o);
    if (t)
        printf("%s\n", t);
    free(t);
    cJSON_Delete(o);
}

struct response {
    int status;
    char *raw;  /* whole response, NUL-terminated */
    char *body; /* into raw */
};

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: ternctl [--admin HOST:PORT[,...]] [--json] COMMAND [ARGS]\n"
        "\n"
        "Talks to a tern node's admin API: --admin, else $TERN_ADMIN, "
        "else\n" DEFAULT_ADMIN ". A list (comma-separated) is tried in turn; write\n"
        "commands refused by a follower go to the leader. Options may come\n"
        "anywhere on the line.\n"
        "\n"
        "  status [--wait-ready S]  cluster and health summary of the node; with\n"
        "                           --wait-ready, wait up to S seconds for it to\n"
        "                           be ready (exit 1 if it is not)\n"
        "  members                  cluster members as the node sees them\n"
        "  clients                  client connections on the node, one page, by\n"
        "                           client id (--after-peer: the cursor's 2nd half)\n"
        "  sessions                 sessions in the cluster, by client id, one page\n"
        "                           (--limit N, --prefix P, --after CURSOR; --all:\n"
        "                           follow the cursor to the end, in pages)\n"
        "  session show ID          one session and its subscriptions\n"
        "  kick ID                  delete a session (its client is disconnected)\n"
        "  subscriptions            subscriptions of persistent sessions, one page,\n"
        "                           by client id (--after-filter: the 2nd half)\n"
        "  retained                 retained messages by topic, one page (the same)\n"
        "  retained delete TOPIC    delete one retained message\n"
        "  transfer-leader [ID]     hand leadership to node ID (or any voter)\n"
        "  drain NODE               close NODE's clients, refuse new ones\n"
        "  undrain NODE             accept clients again\n"
        "  snapshot                 take a Raft snapshot now\n"
        "  reload                   what SIGHUP does: log level and log file from the\n"
        "                           config again, the TLS certificates, keys, CA, CRL\n"
        "  metrics                  Prometheus metrics\n"
        "  add-node ID RAFT PEER MQTT  add node ID (addresses IPV4:PORT); run on\n"
        "                           the leader, answers once it has caught up\n"
        "  remove-node ID           remove node ID from the cluster (on the leader)\n"
        "  passwd [--scram] [--iterations N] FILE USER\n"
        "                           add or replace USER in a Mosquitto password\n"
        "                           file ($7$, N >= 1000 iterations, default 1000;\n"
        "                           --scram: a SCRAM-SHA-256 verifier for MQTT 5\n"
        "                           enhanced authentication, N >= 4096, default\n"
        "                           4096; the password from the terminal or stdin)\n"
        "\n"
        "  --admin HOST:PORT[,...]  the node's admin_listen address(es); given more\n"
        "                           than once, status compares the nodes' password\n"
        "                           and ACL files (digests)\n"
        "  --ca-file FILE           HTTPS (admin_tls_cert_file): the CA the node's\n"
        "                           certificate must chain to, for the address given\n"
        "  --cert FILE --key FILE   a client certificate (admin_tls_ca_file)\n"
        "  --token-file FILE        the admin API bearer token (admin_token_file);\n"
        "                           else $TERN_ADMIN_TOKEN if set\n"
        "  --json                   print the API's JSON instead of tables\n"
        "  --help, --version\n");
}

static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ternctl: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    usage(stderr);
    return EXIT_USAGE;
}

/* The token file's first line, without surrounding blanks (as ternd reads it). */
static bool read_token(const char *path, char *out, size_t cap)
{
    FILE *fp = fopen(path, "r");
    if (!fp) {
        fprintf(stderr, "ternctl: --token-file %s: %s\n", path, strerror(errno));
        return false;
    }
    char line[1024] = "";
    bool ok = fgets(line, sizeof line, fp) != NULL;
    fclose(fp);
    char *p = line;
    while (*p == ' ' || *p == '\t')
        p++;
    size_t n = strcspn(p, "\r\n");
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    if (!ok || n == 0 || n >= cap) {
        fprintf(stderr, "ternctl: --token-file %s: no token on its first line\n", path);
        return false;
    }
    memcpy(out, p, n);
    out[n] = '\0';
    return true;
}

/* --- HTTP ------------------------------------------------------------------------- */

static bool split_admin(struct ctl *ctl, const char *s)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s)
        return false;
    const char *h = s;
    size_t hlen = (size_t)(colon - s);
    if (s[0] == '[') {
        if (hlen < 3 || s[hlen - 1] != ']')
            return false;
        h++;
        hlen -= 2;
    }
    size_t plen = strlen(colon + 1);
    if (hlen >= sizeof(ctl->host) || plen == 0 || plen > 5 ||
        strspn(colon + 1, "0123456789") != plen || atoi(colon + 1) > 65535)
        return false;
    memcpy(ctl->host, h, hlen);
    ctl->host[hlen] = '\0';
    memcpy(ctl->port, colon + 1, plen + 1);
    ctl->admin = s;
    return true;
}

static int dial_one(const struct ctl *ctl, bool quiet)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int rv = getaddrinfo(ctl->host, ctl->port, &hints, &res);
    if (rv != 0) {
        if (!quiet)
            fail(ctl, 0, 0, "cannot reach %s: %s", ctl->admin, gai_strerror(rv));
        return -1;
    }
    int fd = -1, err = 0;
    struct timeval tv = {.tv_sec =
                             ctl->io_timeout_s > 0 ? ctl->io_timeout_s : IO_TIMEOUT_S};
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        /* connect() honours SO_SNDTIMEO on Linux: every step is bounded. */
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            err = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0 && !quiet)
        fail(ctl, 0, 0, "cannot reach %s: %s", ctl->admin,
             strerror(err == EINPROGRESS || err == EAGAIN ? ETIMEDOUT : err));
    return fd;
}

static bool split_admin(struct ctl *ctl, const char *s);
static bool set_addrs(struct ctl *ctl, const char *list);

/* The current address first, then the others of the list in turn; the one that
 * answers becomes the current one. Errors name the last address tried. */
static int dial(struct ctl *ctl)
{
    int fd = dial_one(ctl, ctl->naddrs > 1);
    for (int i = 0; fd < 0 && !ctl->quiet && i < ctl->naddrs; i++) {
        if (strcmp(ctl->addrs[i], ctl->admin) == 0)
            continue;
        split_admin(ctl, ctl->addrs[i]);
        fd = dial_one(ctl, false);
    }
    if (fd < 0 && ctl->naddrs > 1 && !ctl->quiet)
        fail(ctl, 0, 0, "cannot reach any of the %d admin addresses", ctl->naddrs);
    return fd;
}

static bool send_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

/* Reads until the server closes (every response is Connection: close). */
static char *recv_all(int fd, size_t *len)
{
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 == cap) {
            char *p = cap < RESPONSE_MAX ? realloc(buf, cap * 2) : NULL;
            if (!p) {
                free(buf);
                return NULL;
            }
            buf = p;
            cap *= 2;
        }
        ssize_t r = recv(fd, buf + n, cap - n - 1, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            free(buf);
            return NULL;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (buf)
        buf[n] = '\0';
    *len = n;
    return buf;
}

static bool parse_response(char *raw, struct response *r)
{
    char *end = strstr(raw, "\r\n\r\n");
    if (strncmp(raw, "HTTP/1.", 7) != 0 || !end ||
        sscanf(raw + 8, " %d", &r->status) != 1)
        return false;
    r->raw = raw;
    r->body = end + 4;
    return true;
}

/* Performs one request. Returns 0, or EXIT_FAIL with a message printed. */
static int http(struct ctl *ctl, const char *method, const char *path, struct response *r)
{
    char req[8192], auth[640] = "";
    if (ctl->token[0])
        snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", ctl->token);
    int len = snprintf(req, sizeof(req),
                       "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ternctl/%s\r\n%s"
                       "Content-Length: 0\r\nConnection: close\r\n\r\n",
                       method, path, ctl->host, TERN_VERSION, auth);
    if (len < 0 || (size_t)len >= sizeof(req)) {
        fail(ctl, 0, 0, "request too long");
        return EXIT_FAIL;
    }
    int fd = dial(ctl);
    if (fd < 0)
        return EXIT_FAIL;
    size_t n = 0;
    char *raw = NULL;
    if (ctl->tls.ca_file) {
        char why[320];
        raw = ctl_https(fd, &ctl->tls, ctl->host, req, (size_t)len, &n, why, sizeof why);
        close(fd);
        if (!raw) {
            fail(ctl, 0, 0, "%s: %s", ctl->admin, why);
            return EXIT_FAIL;
        }
    } else if (send_all(fd, req, (size_t)len)) {
        raw = recv_all(fd, &n);
    }
    int err = errno;
    if (!ctl->tls.ca_file)
        close(fd);
    if (!raw) {
        fail(ctl, 0, 0, "%s: no answer: %s", ctl->admin,
             strerror(err == EAGAIN ? ETIMEDOUT : err));
        return EXIT_FAIL;
    }
    if (!parse_response(raw, r)) {
        fail(ctl, 0, 0, "%s: not an HTTP response", ctl->admin);
        free(raw);
        return EXIT_FAIL;
    }
    return 0;
}

/* Percent-encodes everything but unreserved characters. */
static char *url_encode(const char *s)
{
    char *out = malloc(strlen(s) * 3 + 1), *o = out;
    if (!out)
        return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
            (*p >= '0' && *p <= '9') || strchr("-._~", *p))
            *o++ = (char)*p;
        else
            o += sprintf(o, "%%%02X", *p);
    }
    *o = '\0';
    return out;
}

/* The request and its JSON answer. ok_status: a status >= 400 that is still an
 * answer (0 for none). Returns NULL after printing the error; *rc says how. */
static bool follow_leader(struct ctl *ctl, double leader);

static cJSON *api(struct ctl *ctl, const char *method, const char *path, int ok_status,
                  int *rc)
{
    struct response r;
    for (int attempt = 0;; attempt++) {
        *rc = http(ctl, method, path, &r);
        if (*rc)
            return NULL;
        cJSON *j = cJSON_Parse(r.body);
        const cJSON *leader = cJSON_GetObjectItemCaseSensitive(j, "leader");
        double lid = cJSON_IsNumber(leader) ? leader->valuedouble : 0;
        /* A write refused by a follower: once more, on the leader. */
        if (r.status == 409 && strcmp(method, "GET") != 0 && attempt == 0 && lid > 0 &&
            follow_leader(ctl, lid)) {
            cJSON_Delete(j);
            free(r.raw);
            continue;
        }
        if (r.status >= 400 && r.status != ok_status) {
            const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
            fail(ctl, r.status, lid, "%s",
                 cJSON_IsString(e) ? e->valuestring : "request failed");
            cJSON_Delete(j);
            j = NULL;
            *rc = EXIT_FAIL;
        } else if (!j) {
            fail(ctl, r.status, 0, "%s: the answer is not JSON", ctl->admin);
            *rc = EXIT_FAIL;
        }
        free(r.raw);
        return j;
    }
}

/* GET /cluster of the current address, quietly (NULL if none). */
static cJSON *peek_cluster(struct ctl *ctl)
{
    struct response r;
    ctl->quiet = true; /* and this address only */
    int rc = http(ctl, "GET", "/cluster", &r);
    ctl->quiet = false;
    if (rc)
        return NULL;
    cJSON *j = r.status == 200 ? cJSON_Parse(r.body) : NULL;
    free(r.raw);
    return j;
}

static bool ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), t = strlen(tail);
    return n >= t && strcmp(s + n - t, tail) == 0;
}

/* Points ctl at the leader's admin API: the leader's "admin" in this node's
 * /cluster members, else whichever address of the list is that node. */
static bool follow_leader(struct ctl *ctl, double leader)
{
    static char found[272], here[272]; /* ctl->admin points into them */
    snprintf(here, sizeof(here), "%s", ctl->admin);
    cJSON *c = peek_cluster(ctl);
    const cJSON *m;
    const cJSON *list = c ? cJSON_GetObjectItemCaseSensitive(c, "members") : NULL;
    cJSON_ArrayForEach(m, list)
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "id");
        const cJSON *adm = cJSON_GetObjectItemCaseSensitive(m, "admin");
        if (cJSON_IsNumber(id) && id->valuedouble == leader && cJSON_IsString(adm) &&
            adm->valuestring[0] && !ends_with(adm->valuestring, ":0") &&
            strlen(adm->valuestring) < sizeof(found)) {
            snprintf(found, sizeof(found), "%s", adm->valuestring);
            cJSON_Delete(c);
            cJSON *o = split_admin(ctl, found) ? peek_cluster(ctl) : NULL;
            cJSON_Delete(o);
            if (o)
                return true;
            split_admin(ctl, here);
            c = NULL;
            break;
        }
    }
    cJSON_Delete(c);
    for (int i = 0; i < ctl->naddrs; i++) {
        if (strcmp(ctl->addrs[i], here) == 0 || !split_admin(ctl, ctl->addrs[i]))
            continue;
        cJSON *o = peek_cluster(ctl);
        const cJSON *id = o ? cJSON_GetObjectItemCaseSensitive(o, "node_id") : NULL;
        bool is = cJSON_IsNumber(id) && id->valuedouble == leader;
        cJSON_Delete(o);
        if (is)
            return true;
    }
    split_admin(ctl, here);
    return false;
}

/* --- output ------------------------------------------------------------------------ */

static void print_json(const cJSON *j)
{
    char *s = cJSON_Print(j);
    if (s)
        printf("%s\n", s);
    free(s);
}

#define TABLE_COLS_MAX 10

struct table {
    int ncols;
    const char *head[TABLE_COLS_MAX];
    char **cells; /* row-major */
    size_t nrows, cap;
};

static void table_add(struct table *t, const char *const *vals)
{
    if (t->nrows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        char **c = realloc(t->cells, cap * (size_t)t->ncols * sizeof(*c));
        if (!c)
            return;
        t->cells = c;
        t->cap = cap;
    }
    for (int i = 0; i < t->ncols; i++)
        t->cells[t->nrows * (size_t)t->ncols + (size_t)i] =
            strdup(vals[i] ? vals[i] : "");
    t->nrows++;
}

/* table_row(t, cell, cell, ...): exactly t->ncols cells. */
#define table_row(t, ...) table_add((t), (const char *const[]){__VA_ARGS__})

static size_t cell_width(const char *s)
{
    return s ? strlen(s) : 0;
}

/* Prints the cell; control characters (from client ids, topics) as '?'. */
static void put_cell(const char *s, size_t pad)
{
    for (const char *p = s ? s : ""; *p; p++)
        putchar((unsigned char)*p < 0x20 || *p == 0x7f ? '?' : *p);
    for (size_t i = 0; i < pad; i++)
        putchar(' ');
}

static void table_print(struct table *t)
{
    size_t w[TABLE_COLS_MAX];
    for (int c = 0; c < t->ncols; c++) {
        w[c] = strlen(t->head[c]);
        for (size_t r = 0; r < t->nrows; r++) {
            size_t l = cell_width(t->cells[r * (size_t)t->ncols + (size_t)c]);
            w[c] = l > w[c] ? l : w[c];
        }
    }
    for (size_t r = 0; r <= t->nrows; r++) {
        for (int c = 0; c < t->ncols; c++) {
            const char *s =
                r == 0 ? t->head[c] : t->cells[(r - 1) * (size_t)t->ncols + (size_t)c];
            bool last = c == t->ncols - 1;
            put_cell(s, last ? 0 : w[c] - cell_width(s) + 2);
        }
        putchar('\n');
    }
    for (size_t i = 0; i < t->nrows * (size_t)t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
}

/* Field text of a JSON object, in a rotating set of buffers (a table row needs
 * several at once). */
static const char *field(const cJSON *o, const char *key)
{
    static char bufs[TABLE_COLS_MAX][64];
    static int next;
    char *b = bufs[next++ % TABLE_COLS_MAX];
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsString(v))
        return v->valuestring;
    if (cJSON_IsBool(v))
        return cJSON_IsTrue(v) ? "yes" : "no";
    if (cJSON_IsNumber(v))
        snprintf(b, 64, "%.0f", v->valuedouble);
    else
        snprintf(b, 64, "-");
    return b;
}

static double number(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static void truncated_note(const cJSON *j, const char *list)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, list);
    const cJSON *next = cJSON_GetObjectItemCaseSensitive(j, "next");
    const cJSON *nf = cJSON_GetObjectItemCaseSensitive(j, "next_filter");
    const cJSON *np = cJSON_GetObjectItemCaseSensitive(j, "next_peer");
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "truncated")))
        printf("(showing %d of %.0f)\n", cJSON_GetArraySize(arr), number(j, "total"));
    if (cJSON_IsString(next))
        printf("(more: ternctl %s --after '%s'%s%s%s, or --all)\n", list,
               next->valuestring,
               cJSON_IsString(nf)   ? " --after-filter '"
               : cJSON_IsString(np) ? " --after-peer '"
                                    : "",
               cJSON_IsString(nf)   ? nf->valuestring
               : cJSON_IsString(np) ? np->valuestring
                                    : "",
               cJSON_IsString(nf) || cJSON_IsString(np) ? "'" : "");
}

/* --- commands ------------------------------------------------------------------ */

static void print_members(const cJSON *cluster)
{
    struct table t = {.ncols = 9,
                      .head = {"ID", "RAFT", "MQTT", "ADMIN", "ROLE", "LEADER", "SELF",
                               "LINK", "MATCH"}};
    const cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(cluster, "members"))
    {
        const char *link =
            cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "link_up")) ? "up" : "down";
        const char *admin = field(m, "admin");
        table_row(&t, field(m, "id"), field(m, "raft"), field(m, "mqtt"),
                  admin[0] ? admin : "-", field(m, "role"), field(m, "leader"),
                  field(m, "self"), link, field(m, "match_index"));
    }
    table_print(&t);
}

/* --wait-ready: polls /health until ready or the deadline (bounded). */
static int wait_ready(struct ctl *ctl)
{
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct response r;
        ctl->quiet = true;
        int rc = http(ctl, "GET", "/health", &r);
        ctl->quiet = false;
        if (rc == 0) {
            cJSON *h = cJSON_Parse(r.body);
            bool ready = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(h, "ready"));
            cJSON_Delete(h);
            free(r.raw);
            if (ready)
                return 0;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        double spent =
            (double)(now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9;
        if (spent >= ctl->wait_ready_s)
            return EXIT_FAIL;
        struct timespec nap = {0, 200 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
}

/* "abcdef012345" (the first 12 hex digits) or "-" for no file. */
static const char *short_digest(const cJSON *auth, const char *key, char *buf)
{
    const char *d = field(auth, key);
    snprintf(buf, 16, "%.12s", d[0] && strcmp(d, "-") ? d : "-");
    return buf;
}

static void print_auth(const cJSON *cluster)
{
    const cJSON *auth = cJSON_GetObjectItemCaseSensitive(cluster, "auth");
    if (!auth)
        return;
    char p[16], a[16];
    printf("auth: password_file %s, acl_file %s, anonymous %s\n",
           short_digest(auth, "password_file_sha256", p),
           short_digest(auth, "acl_file_sha256", a),
           cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(auth, "allow_anonymous"))
               ? "allowed"
               : "refused");
}

/* status with several --admin: one line per node with the digests of its password
 * and ACL files, flagging the nodes whose files differ from the first's. Exit 1
 * if any differs or does not answer. */
static int status_many(struct ctl *ctl)
{
    struct table t = {.ncols = 7,
                      .head = {"NODE", "ADMIN", "STATE", "PASSWORD_FILE", "ACL_FILE",
                               "ANONYMOUS", "FILES"}};
    char first[3][80] = {{0}};
    int differ = 0, failed = 0;
    for (int i = 0; i < ctl->nadmins; i++) {
        struct ctl one = *ctl;
        if (!set_addrs(&one, ctl->admins[i]))
            continue;
        int rc;
        cJSON *c = api(&one, "GET", "/cluster", 0, &rc);
        if (!c) {
            failed++;
            table_row(&t, "?", ctl->admins[i], "unreachable", "", "", "", "");
            continue;
        }
        const cJSON *auth = cJSON_GetObjectItemCaseSensitive(c, "auth");
        char p[16], a[16], cur[3][80];
        snprintf(cur[0], 80, "%s", field(auth, "password_file_sha256"));
        snprintf(cur[1], 80, "%s", field(auth, "acl_file_sha256"));
        snprintf(cur[2], 80, "%s", field(auth, "allow_anonymous"));
        bool same = true;
        if (!first[0][0] && !first[1][0] && !first[2][0])
            memcpy(first, cur, sizeof first);
        else
            same = memcmp(first, cur, sizeof first) == 0;
        differ += !same;
        table_row(&t, field(c, "node_id"), ctl->admins[i], field(c, "state"),
                  short_digest(auth, "password_file_sha256", p),
                  short_digest(auth, "acl_file_sha256", a),
                  cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(auth, "allow_anonymous"))
                      ? "allowed"
                      : "refused",
                  same ? "same" : "DIFFER");
        cJSON_Delete(c);
    }
    table_print(&t);
    if (differ)
        printf("%d node(s) enforce other password/ACL files than the first\n", differ);
    return differ || failed ? EXIT_FAIL : 0;
}

static int cmd_status(struct ctl *ctl, char **args)
{
    int rc;
    bool waited_out = ctl->wait_ready_s >= 0 && wait_ready(ctl) != 0;
    if (ctl->nadmins > 1 && !ctl->json)
        return status_many(ctl);
    cJSON *cluster = api(ctl, "GET", "/cluster", 0, &rc);
    if (!cluster)
        return rc;
    cJSON *health = api(ctl, "GET", "/health", 503, &rc);
    if (!health) {
        cJSON_Delete(cluster);
        return rc;
    }
    if (ctl->json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToObject(o, "cluster", cluster);
        cJSON_AddItemToObject(o, "health", health);
        print_json(o);
        cJSON_Delete(o);
        /* One JSON document: "health"."ready" says it; the exit status too. */
        return waited_out ? EXIT_FAIL : 0;
    }
    bool ready = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(health, "ready"));
    bool draining = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(health, "draining"));
    printf("cluster \"%s\" (id %s)\n", field(cluster, "cluster_name"),
           field(cluster, "cluster_id"));
    printf("node %s: %s, term %s, leader %s\n", field(cluster, "node_id"),
           field(cluster, "state"), field(cluster, "term"), field(cluster, "leader"));
    printf("health: %s%s\n", ready ? "ready" : "NOT READY", draining ? ", draining" : "");
    printf("log: last index %s, applied %s, pending proposals %s\n",
           field(cluster, "last_index"), field(cluster, "applied_index"),
           field(cluster, "pending_proposals"));
    print_auth(cluster);
    printf("\n");
    print_members(cluster);
    cJSON_Delete(cluster);
    cJSON_Delete(health);
    if (waited_out)
        fail(ctl, 0, 0, "not ready after %g s", ctl->wait_ready_s);
    return waited_out ? EXIT_FAIL : 0;
}

/* GET path; prints JSON or calls show(). */
static int get_and_show(struct ctl *ctl, const char *path, void (*show)(const cJSON *))
{
    int rc;
    cJSON *j = api(ctl, "GET", path, 0, &rc);
    if (!j)
        return rc;
    if (ctl->json)
        print_json(j);
    else
        show(j);
    cJSON_Delete(j);
    return 0;
}

static int cmd_members(struct ctl *ctl, char **args)
{
    return get_and_show(ctl, "/cluster", print_members);
}

static void show_clients(const cJSON *j)
{
    struct table t = {.ncols = 8,
                      .head = {"CLIENT_ID", "PEER", "PROTO", "STATE", "PERSISTENT",
                               "KEEPALIVE", "INFLIGHT", "QUEUED"}};
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(j, "clients"))
    {
        table_row(&t, field(c, "client_id"), field(c, "peer"), field(c, "protocol"),
                  field(c, "state"), field(c, "persistent"), field(c, "keepalive_s"),
                  field(c, "inflight"), field(c, "queued"));
    }
    table_print(&t);
    truncated_note(j, "clients");
}

static int get_pages(struct ctl *ctl, const char *path, const char *list,
                     void (*show)(const cJSON *));

static int cmd_clients(struct ctl *ctl, char **args)
{
    return get_pages(ctl, "/clients", "clients", show_clients);
}

static const char *expiry_text(const cJSON *s)
{
    return number(s, "expiry_s") == 4294967295.0 ? "never" : field(s, "expiry_s");
}

static void show_sessions(const cJSON *j)
{
    struct table t = {.ncols = 8,
                      .head = {"CLIENT_ID", "OWNER", "ONLINE", "EXPIRY_S", "QUEUED",
                               "QUEUED_BYTES", "INFLIGHT", "SUBS"}};
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(j, "sessions"))
    {
        table_row(&t, field(s, "client_id"), field(s, "owner"), field(s, "online"),
                  expiry_text(s), field(s, "queued"), field(s, "queued_bytes"),
                  field(s, "inflight"), field(s, "subscriptions"));
    }
    table_print(&t);
    truncated_note(j, "sessions");
}

/* path?limit=&after=&prefix=[&AFTER2=] from the page options given into url;
 * false (said why) when too long. */
static bool page_url(struct ctl *ctl, const char *path, const char *after2_name,
                     char *url, size_t cap)
{
    const char *names[] = {"limit", "after", "prefix", after2_name};
    const char *vals[] = {ctl->limit, ctl->after, ctl->prefix, ctl->after2};
    size_t n = (size_t)snprintf(url, cap, "%s", path);
    for (int i = 0; i < (after2_name ? 4 : 3); i++) {
        if (!vals[i])
            continue;
        char *e = url_encode(vals[i]);
        int m = e ? snprintf(url + n, cap - n, "%s%s=%s", strchr(url, '?') ? "&" : "?",
                             names[i], e)
                  : -1;
        free(e);
        if (m < 0 || (size_t)m >= cap - n) {
            fail(ctl, 0, 0, "%s: too long", names[i]);
            return false;
        }
        n += (size_t)m;
    }
    return true;
}

/* The list's cursor has a second half (next_filter, next_peer) for lists whose
 * keys repeat; its query name is after_filter / after_peer. */
static const char *after2_of(const char *list, const char **next2)
{
    if (strcmp(list, "subscriptions") == 0) {
        *next2 = "next_filter";
        return "after_filter";
    }
    if (strcmp(list, "clients") == 0) {
        *next2 = "next_peer";
        return "after_peer";
    }
    *next2 = NULL;
    return NULL;
}

#define PAGES_MAX 100000 /* --all: at most 1e9 entries at 10000 a page */

/* One page (the options given), or with --all every page from there on: the
 * cursors are followed and the entries gathered into one answer (as if one page
 * had held them all: truncated false, no next). */
static int get_pages(struct ctl *ctl, const char *path, const char *list,
                     void (*show)(const cJSON *))
{
    char url[8192];
    const char *next2_name, *after2_name = after2_of(list, &next2_name);
    if (!ctl->all) {
        if (!page_url(ctl, path, after2_name, url, sizeof(url)))
            return EXIT_USAGE;
        return get_and_show(ctl, url, show);
    }
    cJSON *acc = NULL;
    char *after = NULL, *after2 = NULL;
    int rc = 0;
    for (int page = 0; page < PAGES_MAX; page++) {
        if (!page_url(ctl, path, after2_name, url, sizeof(url))) {
            rc = EXIT_USAGE;
            break;
        }
        cJSON *j = api(ctl, "GET", url, 0, &rc);
        if (!j)
            break;
        const cJSON *next = cJSON_GetObjectItemCaseSensitive(j, "next");
        const cJSON *n2 =
            next2_name ? cJSON_GetObjectItemCaseSensitive(j, next2_name) : NULL;
        free(after);
        free(after2);
        after = cJSON_IsString(next) ? strdup(next->valuestring) : NULL;
        after2 = cJSON_IsString(n2) ? strdup(n2->valuestring) : NULL;
        if (!acc) {
            acc = j;
        } else {
            cJSON *dst = cJSON_GetObjectItemCaseSensitive(acc, list);
            cJSON *src = cJSON_GetObjectItemCaseSensitive(j, list);
            cJSON *e;
            while (cJSON_IsArray(src) && (e = cJSON_DetachItemFromArray(src, 0)))
                cJSON_AddItemToArray(dst, e);
            cJSON_ReplaceItemInObjectCaseSensitive(
                acc, "total", cJSON_CreateNumber(number(j, "total")));
            cJSON_Delete(j);
        }
        if (!after)
            break;
        ctl->after = after;
        ctl->after2 = after2;
    }
    free(after);
    free(after2);
    if (!acc)
        return rc;
    cJSON_DeleteItemFromObjectCaseSensitive(acc, "next");
    if (next2_name)
        cJSON_DeleteItemFromObjectCaseSensitive(acc, next2_name);
    cJSON_ReplaceItemInObjectCaseSensitive(acc, "truncated", cJSON_CreateBool(0));
    if (ctl->json)
        print_json(acc);
    else
        show(acc);
    cJSON_Delete(acc);
    return rc;
}

static int cmd_sessions(struct ctl *ctl, char **args)
{
    return get_pages(ctl, "/sessions", "sessions", show_sessions);
}

static void show_subs(const cJSON *list, bool with_client)
{
    static const char *head[] = {"CLIENT_ID",     "FILTER",          "QOS",   "NO_LOCAL",
                                 "RETAIN_AS_PUB", "RETAIN_HANDLING", "SUB_ID"};
    /* Without the client id column when all rows are the same session. */
    int skip = with_client ? 0 : 1;
    struct table t = {.ncols = 7 - skip};
    memcpy(t.head, head + skip, (size_t)t.ncols * sizeof(head[0]));
    const cJSON *s;
    cJSON_ArrayForEach(s, list)
    {
        const char *row[] = {field(s, "client_id"),
                             field(s, "filter"),
                             field(s, "qos"),
                             field(s, "no_local"),
                             field(s, "retain_as_published"),
                             field(s, "retain_handling"),
                             field(s, "subscription_id")};
        table_add(&t, row + skip);
    }
    table_print(&t);
}

static void show_session(const cJSON *s)
{
    static const char *keys[] = {"client_id", "owner",        "online", "protocol",
                                 "expiry_s",  "epoch",        "queued", "queued_bytes",
                                 "inflight",  "subscriptions"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        printf("%-14s ", keys[i]);
        put_cell(i == 4 ? expiry_text(s) : field(s, keys[i]), 0);
        putchar('\n');
    }
    const cJSON *subs = cJSON_GetObjectItemCaseSensitive(s, "subscription_list");
    if (cJSON_GetArraySize(subs) > 0) {
        putchar('\n');
        show_subs(subs, false);
    }
}

static void show_all_subs(const cJSON *j)
{
    show_subs(cJSON_GetObjectItemCaseSensitive(j, "subscriptions"), true);
    truncated_note(j, "subscriptions");
}

static int cmd_subscriptions(struct ctl *ctl, char **args)
{
    return get_pages(ctl, "/subscriptions", "subscriptions", show_all_subs);
}

/* "/prefix/ENCODED(arg)". */
static char *path_with(const char *prefix, const char *arg)
{
    char *enc = url_encode(arg);
    char *p = enc ? malloc(strlen(prefix) + strlen(enc) + 1) : NULL;
    if (p)
        sprintf(p, "%s%s", prefix, enc);
    free(enc);
    return p;
}

static int cmd_session_show(struct ctl *ctl, char **args)
{
    char *path = path_with("/sessions/", args[0]);
    int rc = path ? get_and_show(ctl, path, show_session) : EXIT_FAIL;
    free(path);
    return rc;
}

/* A write: prints JSON, or msg built from the answer by say(). */
static int act(struct ctl *ctl, const char *method, const char *path,
               void (*say)(const cJSON *j, const char *arg), const char *arg)
{
    int rc;
    cJSON *j = api(ctl, method, path, 0, &rc);
    if (!j)
        return rc;
    if (ctl->json)
        print_json(j);
    else
        say(j, arg);
    cJSON_Delete(j);
    return 0;
}

/* DELETE prefix + arg (encoded). */
static int delete_named(struct ctl *ctl, const char *prefix, const char *arg,
                        void (*say)(const cJSON *j, const char *arg))
{
    char *path = path_with(prefix, arg);
    int rc = path ? act(ctl, "DELETE", path, say, arg) : EXIT_FAIL;
    free(path);
    return rc;
}

static void say_kicked(const cJSON *j, const char *id)
{
    printf("session %s deleted\n", id);
}

static int cmd_kick(struct ctl *ctl, char **args)
{
    return delete_named(ctl, "/sessions/", args[0], say_kicked);
}

static void show_retained(const cJSON *j)
{
    struct table t = {.ncols = 3, .head = {"TOPIC", "BYTES", "QOS"}};
    const cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(j, "retained"))
    {
        table_row(&t, field(m, "topic"), field(m, "payload_bytes"), field(m, "qos"));
    }
    table_print(&t);
    truncated_note(j, "retained");
}

static int cmd_retained(struct ctl *ctl, char **args)
{
    return get_pages(ctl, "/retained", "retained", show_retained);
}

static void say_retained_deleted(const cJSON *j, const char *topic)
{
    printf("retained message on %s deleted\n", topic);
}

static int cmd_retained_delete(struct ctl *ctl, char **args)
{
    return delete_named(ctl, "/retained/", args[0], say_retained_deleted);
}

/* 1 to 16777215 (TERN_NODE_ID_MAX in tern/cmd.h: a proposal id keeps 24 bits
 * of the node id). */
static bool is_node_id(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n <= 8 && strspn(s, "0123456789") == n && strtoull(s, NULL, 10) > 0 &&
           strtoull(s, NULL, 10) <= 16777215ull;
}

static void say_transferred(const cJSON *j, const char *arg)
{
    printf("leader is now node %s (term %s)\n", field(j, "leader"), field(j, "term"));
}

static int cmd_transfer(struct ctl *ctl, char **args)
{
    char path[64] = "/transfer-leader";
    if (args[0]) {
        if (!is_node_id(args[0]))
            return usage_error("transfer-leader: not a node id: \"%s\"", args[0]);
        snprintf(path, sizeof(path), "/transfer-leader?to=%s", args[0]);
    }
    return act(ctl, "POST", path, say_transferred, NULL);
}

static void say_drained(const cJSON *j, const char *node)
{
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(j, "server_reference");
    printf("node %s drained: %s connections closed", node, field(j, "closed"));
    if (cJSON_IsString(ref))
        printf("; MQTT 5 clients sent to %s", ref->valuestring);
    printf("\n");
}

static void say_undrained(const cJSON *j, const char *node)
{
    printf("node %s accepts clients again\n", node);
}

static int drain_cmd(struct ctl *ctl, const char *endpoint, const char *node,
                     void (*say)(const cJSON *, const char *))
{
    char path[64];
    if (!is_node_id(node))
        return usage_error("%s: not a node id: \"%s\"", endpoint, node);
    snprintf(path, sizeof(path), "/%s?node=%s", endpoint, node);
    return act(ctl, "POST", path, say, node);
}

static int cmd_drain(struct ctl *ctl, char **args)
{
    return drain_cmd(ctl, "drain", args[0], say_drained);
}

static int cmd_undrain(struct ctl *ctl, char **args)
{
    return drain_cmd(ctl, "undrain", args[0], say_undrained);
}

static void say_snapshot(const cJSON *j, const char *arg)
{
    printf("snapshot requested at applied index %s\n", field(j, "applied_index"));
}

static int cmd_snapshot(struct ctl *ctl, char **args)
{
    return act(ctl, "POST", "/snapshot", say_snapshot, NULL);
}

static void say_reloaded(const cJSON *j, const char *arg)
{
    printf("reloaded: log level %s, log file %s\n", field(j, "log_level"),
           field(j, "log_file"));
    printf("TLS files loaded again on %s listener(s)\n", field(j, "reloaded"));
}

static int cmd_reload(struct ctl *ctl, char **args)
{
    return act(ctl, "POST", "/reload", say_reloaded, NULL);
}

static int cmd_metrics(struct ctl *ctl, char **args)
{
    struct response r;
    int rc = http(ctl, "GET", "/metrics", &r);
    if (rc)
        return rc;
    rc = r.status == 200 ? 0 : EXIT_FAIL;
    if (rc)
        fprintf(stderr, "ternctl: metrics: HTTP %d\n", r.status);
    else
        fputs(r.body, stdout);
    free(r.raw);
    return rc;
}

static void say_member(const cJSON *j, const char *id)
{
    printf("node %s %s\n", id, field(j, "member"));
}

/* HOST:PORT with an IPv4 host (what the node accepts; needs no escaping). */
static bool is_addr(const char *s)
{
    size_t n = strlen(s);
    const char *colon = strrchr(s, ':');
    return n > 2 && n < 64 && colon && colon != s && colon[1] &&
           strspn(s, "0123456789.:") == n;
}

static int cmd_add_node(struct ctl *ctl, char **args)
{
    if (!is_node_id(args[0]))
        return usage_error("add-node: not a node id: \"%s\"", args[0]);
    for (int i = 1; i <= 3; i++)
        if (!is_addr(args[i]))
            return usage_error("add-node: not an IPV4:PORT address: \"%s\"", args[i]);
    char path[320];
    snprintf(path, sizeof(path), "/members?id=%s&raft=%s&peer=%s&mqtt=%s", args[0],
             args[1], args[2], args[3]);
    ctl->io_timeout_s = ADD_NODE_TIMEOUT_S;
    return act(ctl, "POST", path, say_member, args[0]);
}

static int cmd_remove_node(struct ctl *ctl, char **args)
{
    if (!is_node_id(args[0]))
        return usage_error("remove-node: not a node id: \"%s\"", args[0]);
    char path[64];
    snprintf(path, sizeof(path), "/members/%s", args[0]);
    return act(ctl, "DELETE", path, say_member, args[0]);
}

/* --- dispatch ---------------------------------------------------------------------- */

struct command {
    const char *name, *sub; /* sub: second word, or NULL */
    int min_args, max_args;
    int (*fn)(struct ctl *ctl, char **args);
    const char *args_help;
};

static const struct command commands[] = {
    {"status", NULL, 0, 0, cmd_status, ""},
    {"members", NULL, 0, 0, cmd_members, ""},
    {"clients", NULL, 0, 0, cmd_clients, ""},
    {"sessions", NULL, 0, 0, cmd_sessions, ""},
    {"session", "show", 1, 1, cmd_session_show, "ID"},
    {"kick", NULL, 1, 1, cmd_kick, "ID"},
    {"subscriptions", NULL, 0, 0, cmd_subscriptions, ""},
    {"retained", "delete", 1, 1, cmd_retained_delete, "TOPIC"},
    {"retained", NULL, 0, 0, cmd_retained, ""},
    {"transfer-leader", NULL, 0, 1, cmd_transfer, "[ID]"},
    {"drain", NULL, 1, 1, cmd_drain, "NODE"},
    {"undrain", NULL, 1, 1, cmd_undrain, "NODE"},
    {"snapshot", NULL, 0, 0, cmd_snapshot, ""},
    {"reload", NULL, 0, 0, cmd_reload, ""},
    {"metrics", NULL, 0, 0, cmd_metrics, ""},
    {"add-node", NULL, 4, 4, cmd_add_node, "ID RAFT PEER MQTT"},
    {"remove-node", NULL, 1, 1, cmd_remove_node, "ID"},
};

static int run(struct ctl *ctl, int argc, char **argv)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        const struct command *c = &commands[i];
        if (strcmp(argv[0], c->name) != 0)
            continue;
        int skip = 1;
        if (c->sub) {
            if (argc < 2 || strcmp(argv[1], c->sub) != 0)
                continue;
            skip = 2;
        }
        int nargs = argc - skip;
        if (nargs < c->min_args || nargs > c->max_args)
            return usage_error("usage: %s%s%s %s", c->name, c->sub ? " " : "",
                               c->sub ? c->sub : "", c->args_help);
        return c->fn(ctl, argv + skip);
    }
    return usage_error("unknown command \"%s%s%s\"", argv[0], argc > 1 ? " " : "",
                       argc > 1 ? argv[1] : "");
}

/* "A,B,C" into ctl->addrs; false if one is not HOST:PORT. */
static bool set_addrs(struct ctl *ctl, const char *list)
{
    ctl->naddrs = 0;
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ",");
        if (ctl->naddrs == ADDRS_MAX || len == 0 || len >= sizeof(ctl->addrs[0]))
            return false;
        memcpy(ctl->addrs[ctl->naddrs], p, len);
        ctl->addrs[ctl->naddrs][len] = '\0';
        struct ctl probe = {0};
        if (!split_admin(&probe, ctl->addrs[ctl->naddrs]))
            return false;
        ctl->naddrs++;
        p += len + (p[len] == ',');
    }
    return ctl->naddrs > 0 && split_admin(ctl, ctl->addrs[0]);
}

int main(int argc, char **argv)
{
    struct ctl ctl = {.wait_ready_s = -1};
    const char *env_token = getenv("TERN_ADMIN_TOKEN");
    if (env_token && strlen(env_token) < sizeof ctl.token && !strpbrk(env_token, "\r\n"))
        strcpy(ctl.token, env_token);
    if (argc > 1 && strcmp(argv[1], "passwd") == 0) /* local: no admin API */
        return ctl_passwd(argc - 2, argv + 2);
    const char *env = getenv("TERN_ADMIN");
    const char *admin = env && env[0] ? env : DEFAULT_ADMIN;
    /* Options anywhere on the line ("--" ends them); the other words, in order,
     * are the command and its arguments. A NULL after the last argument:
     * optional arguments read as NULL. */
    char *args[16] = {0};
    int n = 0;
    bool opts = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (opts && strcmp(a, "--") == 0) {
            opts = false;
        } else if (opts && strcmp(a, "--json") == 0) {
            ctl.json = true;
        } else if (opts && strcmp(a, "--admin") == 0) {
            if (i + 1 >= argc)
                return usage_error("--admin needs HOST:PORT[,HOST:PORT...]");
            admin = argv[++i];
            if (ctl.nadmins == 16)
                return usage_error("at most 16 --admin");
            ctl.admins[ctl.nadmins++] = admin;
        } else if (opts && (strcmp(a, "--ca-file") == 0 || strcmp(a, "--cert") == 0 ||
                            strcmp(a, "--key") == 0)) {
            if (i + 1 >= argc)
                return usage_error("--ca-file, --cert and --key need a FILE");
            const char **f = a[2] == 'c' && a[3] == 'a' ? &ctl.tls.ca_file
                             : a[2] == 'c'              ? &ctl.tls.cert_file
                                                        : &ctl.tls.key_file;
            *f = argv[++i];
        } else if (opts && strcmp(a, "--token-file") == 0) {
            if (i + 1 >= argc)
                return usage_error("--token-file needs a FILE");
            if (!read_token(argv[++i], ctl.token, sizeof ctl.token))
                return EXIT_FAIL;
        } else if (opts && strcmp(a, "--wait-ready") == 0) {
            char *end = NULL;
            double v = i + 1 < argc ? strtod(argv[i + 1], &end) : -1;
            if (!end || *end || v < 0 || v > 86400)
                return usage_error("--wait-ready needs SECONDS (0 to 86400)");
            ctl.wait_ready_s = v;
            i++;
        } else if (opts && strcmp(a, "--all") == 0) {
            ctl.all = true;
        } else if (opts &&
                   (strcmp(a, "--after-filter") == 0 || strcmp(a, "--after-peer") == 0)) {
            if (i + 1 >= argc)
                return usage_error("%s needs a value", a);
            ctl.after2 = argv[++i];
        } else if (opts && (strcmp(a, "--prefix") == 0 || strcmp(a, "--after") == 0 ||
                            strcmp(a, "--limit") == 0)) {
            if (i + 1 >= argc)
                return usage_error("%s needs a value", a);
            const char **slot = a[2] == 'p'   ? &ctl.prefix
                                : a[2] == 'a' ? &ctl.after
                                              : &ctl.limit;
            *slot = argv[++i];
            if (slot == &ctl.limit && (strspn(*slot, "0123456789") != strlen(*slot) ||
                                       !**slot || strlen(*slot) > 5))
                return usage_error("--limit needs a number (1 to 10000)");
        } else if (opts && (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)) {
            usage(stdout);
            return 0;
        } else if (opts && strcmp(a, "--version") == 0) {
            printf("ternctl %s\n", TERN_VERSION);
            return 0;
        } else if (opts && a[0] == '-' && a[1] == '-') {
            return usage_error("unknown option \"%s\"", a);
        } else {
            if (n == 15)
                return usage_error("too many arguments");
            args[n++] = argv[i];
        }
    }
    if (!set_addrs(&ctl, admin))
        return usage_error("%s needs HOST:PORT[,HOST:PORT...], got \"%s\"",
                           admin == env ? "TERN_ADMIN" : "--admin", admin);
    if (n == 0)
        return usage_error("no command");
    if (ctl.wait_ready_s >= 0 && strcmp(args[0], "status") != 0)
        return usage_error("--wait-ready goes with status");
    return run(&ctl, n, args);
}
