/* chat.c: chat templates (see chat.h); references in tests/fixtures/chat/ from tools/make_chat_fixtures.py. */
#include "text/chat.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/log.h"

static const char *const TEMPLATE_NAMES[] = {"none", "qwen3", "qwen3-nothink", "llama3"};

bool chat_template_parse(const char *name, chat_template *out, s2d_err *err) {
    int i = name_index(name, TEMPLATE_NAMES, (int)S2D_ARRAY_LEN(TEMPLATE_NAMES));
    if (i >= 0) return *out = (chat_template)i, true;
    return err_set(err, "unknown chat template '%s' (expected one of none, qwen3, qwen3-nothink, llama3)", name);
}

const char *chat_template_name(chat_template t) {
    return (unsigned)t < S2D_ARRAY_LEN(TEMPLATE_NAMES) ? TEMPLATE_NAMES[t] : "?";
}

static char *concat(const char *const *parts, const size_t *lens, int n) {
    size_t total = 0;
    for (int i = 0; i < n; i++) total += lens[i];
    char *out = xmalloc(total + 1), *p = out;
    for (int i = 0; i < n; i++) {
        memcpy(p, parts[i], lens[i]);
        p += lens[i];
    }
    *p = '\0';
    return out;
}

char *chat_user_content(const char *problem, const char *instruction) {
    size_t lp = strlen(problem), li = instruction ? strlen(instruction) : 0;
    if (li == 0 || (lp >= li && memcmp(problem + lp - li, instruction, li) == 0)) return xstrdup(problem);
    const char *parts[] = {problem, "\n", instruction};
    size_t lens[] = {lp, 1, li};
    return concat(parts, lens, 3);
}

/* Code point of the UTF-8 sequence at s (well-formed only) and its length; -1 when malformed. */
static long utf8_at(const unsigned char *s, const unsigned char *end, int *len) {
    unsigned c = s[0];
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || s + n > end) return -1;
    long cp = n == 1 ? (long)c : (long)(c & (0x7f >> n));
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) return -1;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    *len = n;
    return cp;
}

/* Python's str.isspace(): bidirectional class WS, B or S, or category Zs. */
static bool py_space(long cp) {
    return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20) || cp == 0x85 || cp == 0xa0 ||
           cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f ||
           cp == 0x205f || cp == 0x3000;
}

void chat_py_strip(const char *s, const char **begin, const char **end) {
    const unsigned char *b = (const unsigned char *)s, *e = b + strlen(s);
    int n;
    long cp;
    while (b < e && (cp = utf8_at(b, e, &n)) >= 0 && py_space(cp)) b += n;
    /* from the right: step back over continuation bytes to the start of the last character */
    while (e > b) {
        const unsigned char *p = e - 1;
        while (p > b && (*p & 0xc0) == 0x80 && e - p < 4) p--;
        cp = utf8_at(p, e, &n);
        if (cp < 0 || p + n != e || !py_space(cp)) break;
        e = p;
    }
    *begin = (const char *)b;
    *end = (const char *)e;
}

char *chat_render(chat_template t, const char *content) {
    switch (t) {
    case CHAT_NONE:
        return xstrdup(content);
    case CHAT_QWEN3:
    case CHAT_QWEN3_NOTHINK: {
        static const char head[] = "<|im_start|>user\n", tail[] = "<|im_end|>\n<|im_start|>assistant\n",
                          nothink[] = "<think>\n\n</think>\n\n";
        const char *parts[] = {head, content, tail, nothink};
        size_t lens[] = {sizeof head - 1, strlen(content), sizeof tail - 1, sizeof nothink - 1};
        return concat(parts, lens, t == CHAT_QWEN3_NOTHINK ? 4 : 3);
    }
    case CHAT_LLAMA3: {
        static const char head[] = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n",
                          tail[] = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
        const char *b, *e;
        chat_py_strip(content, &b, &e);
        const char *parts[] = {head, b, tail};
        size_t lens[] = {sizeof head - 1, (size_t)(e - b), sizeof tail - 1};
        return concat(parts, lens, 3);
    }
    }
    die("chat_render: unknown template %d", (int)t);
}

char *chat_render_problem(chat_template t, const char *problem, const char *instruction) {
    char *content = chat_user_content(problem, instruction);
    char *out = chat_render(t, content);
    free(content);
    return out;
}

int chat_stop_ids(chat_template t, int32_t *ids, int max) {
    static const int32_t qwen[] = {151645, 151643}, llama[] = {128001, 128008, 128009};
    const int32_t *src = NULL;
    int n = 0;
    if (t == CHAT_QWEN3 || t == CHAT_QWEN3_NOTHINK) src = qwen, n = 2;
    if (t == CHAT_LLAMA3) src = llama, n = 3;
    n = S2D_MIN(n, max);
    for (int i = 0; i < n; i++) ids[i] = src[i];
    return n;
}

const char *const *chat_stop_tokens(chat_template t) {
    static const char *const qwen[] = {"<|im_end|>", "<|endoftext|>", NULL};
    static const char *const llama[] = {"<|end_of_text|>", "<|eom_id|>", "<|eot_id|>", NULL};
    static const char *const none[] = {NULL};
    if (t == CHAT_QWEN3 || t == CHAT_QWEN3_NOTHINK) return qwen;
    if (t == CHAT_LLAMA3) return llama;
    return none;
}

/* Known jinja chat templates, identified by length and FNV-1a 64 of their bytes. */
typedef struct {
    size_t len;
    uint64_t fnv;
    chat_template t;
    const char *what;
} known_template;
static const known_template KNOWN_TEMPLATES[] = {
    {4116, 0x2bfdb7aa9754484eull, CHAT_QWEN3, "Qwen3"},
    {389, 0x0e60067a5537498eull, CHAT_LLAMA3, "Llama 3 (as shipped with the Llama 3.1 tokenizer)"},
};

static uint64_t fnv1a64(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 0x100000001b3ull;
    return h;
}

static bool from_tokenizer(const char *tok_path, bool *found, chat_template *out, const char *hint, s2d_err *err);

bool chat_template_from_tokenizer(const char *tok_path, bool *found, chat_template *out, s2d_err *err) {
    return from_tokenizer(tok_path, found, out, "give --template NAME", err);
}

static bool from_tokenizer(const char *tok_path, bool *found, chat_template *out, const char *hint, s2d_err *err) {
    *found = false;
    char dir[4096], path[4200];
    struct stat st;
    snprintf(dir, sizeof dir, "%s", tok_path);
    if (stat(tok_path, &st) == 0 && !S_ISDIR(st.st_mode)) { /* the tokenizer.json itself: its directory */
        char *slash = strrchr(dir, '/');
        if (slash) *slash = '\0';
        else snprintf(dir, sizeof dir, ".");
    }
    path_join(path, sizeof path, dir, "tokenizer_config.json");
    if (stat(path, &st) != 0) return true; /* no file: nothing to match */
    char *text;
    size_t len;
    if (!read_file(path, &text, &len, err)) return false;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    if (!j) return err_set(err, "%s: invalid JSON", path);
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(j, "chat_template");
    if (!ct || !cJSON_IsString(ct)) { /* absent, or the list-of-named-templates form: not read */
        bool list = ct && cJSON_IsArray(ct);
        cJSON_Delete(j);
        if (list) return err_set(err, "%s: chat_template is a list of named templates, which s2d does not read: %s",
                                 path, hint);
        return true;
    }
    size_t n = strlen(ct->valuestring);
    uint64_t h = fnv1a64(ct->valuestring, n);
    cJSON_Delete(j);
    for (size_t i = 0; i < S2D_ARRAY_LEN(KNOWN_TEMPLATES); i++)
        if (KNOWN_TEMPLATES[i].len == n && KNOWN_TEMPLATES[i].fnv == h) {
            *found = true, *out = KNOWN_TEMPLATES[i].t;
            return true;
        }
    return err_set(err, "%s: its chat_template (%zu bytes, FNV-1a 0x%016llx) is none of the built-in templates "
                        "(the Qwen3 one, the Llama 3 one of the Llama 3.1 tokenizer), so s2d cannot render it "
                        "exactly: %s (qwen3, qwen3-nothink, llama3 or none) to choose one",
                   path, n, (unsigned long long)h, hint);
}

bool chat_template_choose(const char *name, const char *named_from, const char *const *tok_paths, int n,
                          const char *fallback, const char *fallback_from, chat_template *out, const char **from,
                          s2d_err *err) {
    if (name && strcmp(name, "auto") != 0) {
        *from = named_from;
        return chat_template_parse(name, out, err);
    }
    char hint[128];
    snprintf(hint, sizeof hint, "give %s NAME", named_from);
    const char *first = NULL;
    for (int i = 0; i < n; i++) {
        if (!tok_paths[i]) continue;
        bool found;
        chat_template t;
        if (!from_tokenizer(tok_paths[i], &found, &t, hint, err)) return false;
        if (!found) continue;
        if (first && t != *out)
            return err_set(err, "the tokenizers' chat templates differ (%s: %s, %s: %s): %s to choose one", first,
                           chat_template_name(*out), tok_paths[i], chat_template_name(t), hint);
        if (!first) first = tok_paths[i], *out = t;
    }
    if (first) {
        *from = "the tokenizer's tokenizer_config.json";
        return true;
    }
    *from = fallback_from;
    return chat_template_parse(fallback, out, err);
}

bool chat_template_warn_fit(const char *who, chat_template t, const char *from, const char *model_type,
                            const char *model) {
    if (chat_template_fits(t, model_type)) return true;
    log_warn("%s: the chat template %s (from %s) does not fit the model's type %s (%s): prompts will not look like "
             "the model's training data", who, chat_template_name(t), from, model_type, model);
    return false;
}

bool chat_template_fits(chat_template t, const char *model_type) {
    bool qwen = strcmp(model_type, "qwen3") == 0 || strcmp(model_type, "qwen2") == 0;
    bool llama = strcmp(model_type, "llama") == 0;
    if (t == CHAT_NONE || (!qwen && !llama)) return true;
    return t == CHAT_LLAMA3 ? llama : qwen;
}
