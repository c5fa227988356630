/* reward_cmd.c: the JSON-lines reward protocol over a child process (reward_cmd.h). */
#include "text/reward_cmd.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/subproc.h"

enum {
    REPLY_MAX = 64 * 1024,       /* longest reply line */
    ARENA_BYTES = 2 * 1024 * 1024 /* cJSON nodes and strings of one reply */
};

struct reward_cmd {
    char *command;
    double timeout_s;
    subproc proc;
    char *req;          /* request line being built */
    size_t req_len, req_cap;
    char *arena;        /* [ARENA_BYTES] cJSON allocations of the reply being parsed */
    size_t arena_used;
    bool arena_full;
    int n_extras;
    char names[REWARD_MAX_EXTRAS][REWARD_NAME_MAX + 1];
    double sum[REWARD_MAX_EXTRAS];
    long count[REWARD_MAX_EXTRAS];
};

/* cJSON allocates from the arena while a reply is parsed (one parse at a time, on the calling thread). */
static reward_cmd *g_arena_owner;
static void *arena_alloc(size_t n) {
    reward_cmd *rc = g_arena_owner;
    size_t at = (rc->arena_used + 15) & ~(size_t)15;
    if (at + n > ARENA_BYTES) return rc->arena_full = true, NULL;
    rc->arena_used = at + n;
    return rc->arena + at;
}
static void arena_free(void *p) { (void)p; }

static cJSON *parse_reply(reward_cmd *rc, const char *line, size_t len) {
    rc->arena_used = 0, rc->arena_full = false;
    g_arena_owner = rc;
    cJSON_Hooks hooks = {arena_alloc, arena_free};
    cJSON_InitHooks(&hooks);
    cJSON *j = cJSON_ParseWithLength(line, len);
    cJSON_InitHooks(NULL); /* back to malloc/free for everyone else */
    g_arena_owner = NULL;
    return j; /* lives in the arena until the next parse; never cJSON_Delete'd */
}

bool reward_cmd_start(const char *command, double timeout_s, reward_cmd **out, s2d_err *err) {
    reward_cmd *rc = xcalloc(1, sizeof *rc);
    if (!subproc_start(&rc->proc, command, REPLY_MAX, err)) {
        free(rc);
        return err_prefix(err, "reward command \"%s\"", command);
    }
    rc->command = xstrdup(command);
    rc->timeout_s = timeout_s;
    rc->req_cap = 64 * 1024;
    rc->req = xmalloc(rc->req_cap);
    rc->arena = xmalloc(ARENA_BYTES);
    *out = rc;
    return true;
}

const char *reward_cmd_command(const reward_cmd *rc) { return rc->command; }

static void req_put(reward_cmd *rc, const char *s, size_t n) {
    if (rc->req_len + n + 1 > rc->req_cap) { /* a longer record than any before: grow once for it */
        while (rc->req_len + n + 1 > rc->req_cap) rc->req_cap *= 2;
        rc->req = xrealloc(rc->req, rc->req_cap);
    }
    memcpy(rc->req + rc->req_len, s, n);
    rc->req_len += n;
}

/* A JSON string: escapes for '"', '\\' and control bytes; other bytes (UTF-8) as they are. */
static void req_string(reward_cmd *rc, const char *s) {
    req_put(rc, "\"", 1);
    size_t run = 0;
    for (const char *p = s;; p++) {
        unsigned char c = (unsigned char)*p;
        if (c && c >= 0x20 && c != '"' && c != '\\') {
            run++;
            continue;
        }
        req_put(rc, p - run, run), run = 0;
        if (!c) break;
        char esc[8];
        int n = c == '"' ? snprintf(esc, sizeof esc, "\\\"") : c == '\\' ? snprintf(esc, sizeof esc, "\\\\")
              : c == '\n' ? snprintf(esc, sizeof esc, "\\n") : c == '\t' ? snprintf(esc, sizeof esc, "\\t")
              : c == '\r' ? snprintf(esc, sizeof esc, "\\r") : snprintf(esc, sizeof esc, "\\u%04x", c);
        req_put(rc, esc, (size_t)n);
    }
    req_put(rc, "\"", 1);
}

static int extra_slot(reward_cmd *rc, const char *name) {
    for (int i = 0; i < rc->n_extras; i++)
        if (strcmp(rc->names[i], name) == 0) return i;
    if (rc->n_extras == REWARD_MAX_EXTRAS) return -1;
    snprintf(rc->names[rc->n_extras], sizeof rc->names[0], "%s", name);
    rc->sum[rc->n_extras] = 0, rc->count[rc->n_extras] = 0;
    return rc->n_extras++;
}

static bool name_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > REWARD_NAME_MAX) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' ||
              *s == '-' || *s == '.' || *s == '/'))
            return false;
    return true;
}

/* The first bytes of a reply, for error messages. */
static const char *excerpt(const char *line, size_t len, char *buf, size_t n) {
    snprintf(buf, n, "%.*s%s", (int)S2D_MIN(len, (size_t)80), line, len > 80 ? "..." : "");
    return buf;
}

bool reward_cmd_score(reward_cmd *rc, const char *id, const char *what, const char *prompt, const char *response,
                      const char *answer, double *reward, s2d_err *err) {
    rc->req_len = 0;
    req_put(rc, "{\"id\": ", 7), req_string(rc, id);
    req_put(rc, ", \"prompt\": ", 12), req_string(rc, prompt);
    req_put(rc, ", \"response\": ", 14), req_string(rc, response);
    req_put(rc, ", \"answer\": ", 12), req_string(rc, answer);
    req_put(rc, "}\n", 2);
    char *line;
    size_t len;
    if (!subproc_write(&rc->proc, rc->req, rc->req_len, rc->timeout_s, err) ||
        !subproc_read_line(&rc->proc, rc->timeout_s, &line, &len, err))
        return err_prefix(err, "reward command \"%s\", %s (id %s)", rc->command, what, id);
    char ex[128];
    cJSON *j = parse_reply(rc, line, len);
    if (!j) {
        bool nonfinite = strstr(line, "NaN") || strstr(line, "Infinity");
        return err_set(err, "reward command \"%s\", %s (id %s): %s: %s", rc->command, what, id,
                       rc->arena_full ? "the reply is too large to parse"
                       : nonfinite    ? "the reply holds a non-finite number (NaN or Infinity), not valid JSON"
                                      : "the reply is not valid JSON",
                       excerpt(line, len, ex, sizeof ex));
    }
    if (!cJSON_IsObject(j))
        return err_set(err, "reward command \"%s\", %s (id %s): the reply is not a JSON object: %s", rc->command, what,
                       id, excerpt(line, len, ex, sizeof ex));
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "reward");
    if (!r || !cJSON_IsNumber(r))
        return err_set(err, "reward command \"%s\", %s (id %s): the reply has no numeric \"reward\": %s", rc->command,
                       what, id, excerpt(line, len, ex, sizeof ex));
    if (!isfinite(r->valuedouble))
        return err_set(err, "reward command \"%s\", %s (id %s): \"reward\" is not finite (%g)", rc->command, what, id,
                       r->valuedouble);
    *reward = r->valuedouble;
    for (const cJSON *f = j->child; f; f = f->next) {
        if (!f->string || strcmp(f->string, "reward") == 0 || strcmp(f->string, "id") == 0) continue;
        if (!cJSON_IsNumber(f) && !cJSON_IsBool(f)) continue;
        double v = cJSON_IsNumber(f) ? f->valuedouble : cJSON_IsTrue(f) ? 1.0 : 0.0;
        if (!name_ok(f->string))
            return err_set(err, "reward command \"%s\", %s (id %s): field name \"%.60s\" is not a metric name "
                           "(1 to %d of A-Z a-z 0-9 _ - . /)", rc->command, what, id, f->string, REWARD_NAME_MAX);
        if (!isfinite(v))
            return err_set(err, "reward command \"%s\", %s (id %s): \"%s\" is not finite (%g)", rc->command, what, id,
                           f->string, v);
        int k = extra_slot(rc, f->string);
        if (k < 0)
            return err_set(err, "reward command \"%s\", %s (id %s): more than %d extra metric names (\"%s\")",
                           rc->command, what, id, REWARD_MAX_EXTRAS, f->string);
        rc->sum[k] += v, rc->count[k]++;
    }
    return true;
}

void reward_cmd_step_reset(reward_cmd *rc) {
    for (int i = 0; i < rc->n_extras; i++) rc->sum[i] = 0, rc->count[i] = 0;
}

int reward_cmd_n_extras(const reward_cmd *rc) { return rc->n_extras; }

bool reward_cmd_extra(const reward_cmd *rc, int i, const char **name, double *mean) {
    if (i < 0 || i >= rc->n_extras || rc->count[i] == 0) return false;
    *name = rc->names[i], *mean = rc->sum[i] / (double)rc->count[i];
    return true;
}

int reward_cmd_extras(const reward_cmd *rc, const char **names, double *means, int cap) {
    int n = 0;
    for (int i = 0; i < rc->n_extras && n < cap; i++)
        if (reward_cmd_extra(rc, i, &names[n], &means[n])) n++;
    return n;
}

void reward_cmd_write_metrics(const reward_cmd *rc, FILE *f) {
    for (int i = 0; i < rc->n_extras; i++) {
        const char *name;
        double mean;
        if (reward_cmd_extra(rc, i, &name, &mean)) fprintf(f, ", \"reward/%s\": %.6g", name, mean);
    }
}

void reward_cmd_close(reward_cmd *rc) {
    if (!rc) return;
    subproc_stop(&rc->proc, 2.0);
    free(rc->command), free(rc->req), free(rc->arena);
    free(rc);
}
