/* tokenizer.c: loading tokenizer.json and lookups. Encoding lives in tokenizer_encode.c, decoding and the
 * tokenizer files of a model directory in tokenizer_decode.c. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/json.h"
#include "core/log.h"
#include "text/tokenizer_internal.h"

/* Ids above this are refused: they would only waste memory on id-indexed tables. */
enum { TOK_MAX_ID = 1 << 24 };

char tok_byte_char[256][2];
uint8_t tok_byte_char_len[256];
static int16_t g_char_byte[324]; /* code point (< 0x144) -> byte, or -1 */
static pthread_once_t g_byte_level_once = PTHREAD_ONCE_INIT;

/* GPT-2 bytes_to_unicode: printable Latin-1 bytes map to themselves; the other 68 bytes map, in order, to
 * U+0100 onwards, so every byte has a visible character. */
static void byte_level_build(void) {
    int extra = 0;
    for (int i = 0; i < 324; i++) g_char_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        int cp = printable ? b : 256 + extra++;
        g_char_byte[cp] = (int16_t)b;
        if (cp < 0x80) {
            tok_byte_char[b][0] = (char)cp;
            tok_byte_char_len[b] = 1;
        } else {
            tok_byte_char[b][0] = (char)(0xC0 | (cp >> 6));
            tok_byte_char[b][1] = (char)(0x80 | (cp & 0x3F));
            tok_byte_char_len[b] = 2;
        }
    }
}
void tok_byte_level_init(void) { pthread_once(&g_byte_level_once, byte_level_build); }

uint64_t tok_hash_bytes(const void *data, size_t n) {
    const unsigned char *p = data;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * 0x94d049bb133111ebull;
    h ^= h >> 29;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 32;
    return h;
}

static uint32_t table_mask_for(size_t count) {
    size_t cap = 16;
    while (cap < count * 2 + 1) cap <<= 1;
    return (uint32_t)(cap - 1);
}

int32_t tok_vocab_lookup(const tokenizer *t, const char *s, size_t n) {
    uint64_t h64 = tok_hash_bytes(s, n);
    uint32_t h = (uint32_t)h64, i = (uint32_t)(h64 >> 32) & t->vocab_mask;
    for (;;) {
        const tok_str_slot *slot = &t->vocab_map[i];
        if (slot->id < 0) return -1;
        if (slot->hash == h && t->model_len[slot->id] == n && memcmp(t->model_str + t->model_off[slot->id], s, n) == 0)
            return slot->id;
        i = (i + 1) & t->vocab_mask;
    }
}

static void vocab_insert(tokenizer *t, int32_t id) {
    const char *s = t->model_str + t->model_off[id];
    uint64_t h64 = tok_hash_bytes(s, t->model_len[id]);
    uint32_t h = (uint32_t)h64, i = (uint32_t)(h64 >> 32) & t->vocab_mask;
    while (t->vocab_map[i].id >= 0) i = (i + 1) & t->vocab_mask;
    t->vocab_map[i].hash = h;
    t->vocab_map[i].id = id;
}

static void merge_insert(tokenizer *t, int32_t a, int32_t b, uint32_t rank, int32_t new_id) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t i = tok_merge_index(key, t->merge_mask);
    while (t->merge_map[i].key != UINT64_MAX && t->merge_map[i].key != key) i = (i + 1) & t->merge_mask;
    /* A repeated pair keeps its last rank, as HF's HashMap collect does. */
    t->merge_map[i].key = key;
    t->merge_map[i].rank = rank;
    t->merge_map[i].new_id = new_id;
}

/* ---------------------------------------------------------------------------------------------------- */
/* JSON helpers: every error names the file and the JSON path. */

typedef struct {
    const char *file;
    s2d_err *err;
} load_ctx;

static bool jerr(load_ctx *c, const char *jpath, const char *fmt, const char *detail) {
    char reason[600];
    snprintf(reason, sizeof reason, fmt, detail ? detail : "");
    return err_set(c->err, "%s: %s: %s", c->file, jpath, reason);
}

/* Optional boolean: absent or null gives def. */
static bool get_bool(load_ctx *c, const cJSON *obj, const char *key, const char *jpath, bool def, bool *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!j || cJSON_IsNull(j)) {
        *out = def;
        return true;
    }
    if (!cJSON_IsBool(j)) return jerr(c, jpath, "expected a boolean, found %s", json_kind(j));
    *out = cJSON_IsTrue(j);
    return true;
}

static bool get_id(load_ctx *c, const cJSON *j, const char *jpath, int32_t *out) {
    if (!cJSON_IsNumber(j)) return jerr(c, jpath, "expected an integer token id, found %s", json_kind(j));
    double v = j->valuedouble;
    if (!(v >= 0 && v < TOK_MAX_ID) || v != floor(v))
        return jerr(c, jpath, "token id must be an integer in [0, 16777216)%s", NULL);
    *out = (int32_t)v;
    return true;
}

/* The "type" string of a component object. */
static bool get_type(load_ctx *c, const cJSON *obj, const char *jpath, const char **out) {
    char p[256];
    snprintf(p, sizeof p, "%s.type", jpath);
    if (!cJSON_IsObject(obj)) return jerr(c, jpath, "expected an object, found %s", json_kind(obj));
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, "type");
    if (!cJSON_IsString(j)) return jerr(c, p, "expected a type name string, found %s", json_kind(j));
    *out = j->valuestring;
    return true;
}

/* ---------------------------------------------------------------------------------------------------- */

static bool compile_regex(load_ctx *c, const char *jpath, const char *pattern, size_t len, regex_t **out) {
    static OnigEncoding enc[1];
    enc[0] = ONIG_ENCODING_UTF8;
    onig_initialize(enc, 1); /* idempotent */
    OnigErrorInfo einfo;
    int r = onig_new(out, (const OnigUChar *)pattern, (const OnigUChar *)pattern + len, ONIG_OPTION_NONE,
                     ONIG_ENCODING_UTF8, ONIG_SYNTAX_DEFAULT, &einfo);
    if (r != ONIG_NORMAL) {
        OnigUChar msg[ONIG_MAX_ERROR_MESSAGE_LEN];
        onig_error_code_to_str(msg, r, &einfo);
        *out = NULL;
        return jerr(c, jpath, "cannot compile the regex: %s", (const char *)msg);
    }
    return true;
}

/* The Split patterns of Qwen2/Qwen3 (\p{N}) and Llama 3 (\p{N}{1,3}); served by the hand matcher. */
static const char *const QWEN_PATTERN =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";
static const char *const LLAMA3_PATTERN =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/* ByteLevel's own regex (use_regex: true), GPT-2's pattern as HF writes it. */
static const char *const GPT2_PATTERN =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static bool load_split(load_ctx *c, tokenizer *t, const cJSON *pt, const char *jpath) {
    char p[256];
    if (t->n_levels >= TOK_MAX_LEVELS) return jerr(c, jpath, "too many pre-tokenizers (at most 4 supported)%s", NULL);
    const cJSON *beh = cJSON_GetObjectItemCaseSensitive(pt, "behavior");
    snprintf(p, sizeof p, "%s.behavior", jpath);
    if (!cJSON_IsString(beh)) return jerr(c, p, "expected a string, found %s", json_kind(beh));
    if (strcmp(beh->valuestring, "Isolated") != 0)
        return jerr(c, p, "Split behavior \"%s\" is not supported (only \"Isolated\")", beh->valuestring);
    bool invert;
    snprintf(p, sizeof p, "%s.invert", jpath);
    if (!get_bool(c, pt, "invert", p, false, &invert)) return false;
    if (invert) return jerr(c, p, "Split with invert: true is not supported%s", NULL);
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(pt, "pattern");
    snprintf(p, sizeof p, "%s.pattern", jpath);
    if (!cJSON_IsObject(pat)) return jerr(c, p, "expected {\"Regex\": ...} or {\"String\": ...}, found %s", json_kind(pat));
    const cJSON *rx = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
    const cJSON *lit = cJSON_GetObjectItemCaseSensitive(pat, "String");
    tok_level *lv = &t->levels[t->n_levels];
    memset(lv, 0, sizeof *lv);
    if (cJSON_IsString(rx)) {
        snprintf(p, sizeof p, "%s.pattern.Regex", jpath);
        if (!compile_regex(c, p, rx->valuestring, strlen(rx->valuestring), &lv->re)) return false;
        if (strcmp(rx->valuestring, QWEN_PATTERN) == 0) lv->fast_digits = 1;
        if (strcmp(rx->valuestring, LLAMA3_PATTERN) == 0) lv->fast_digits = 3;
    } else if (cJSON_IsString(lit)) {
        /* A literal: escape every ASCII punctuation character so Oniguruma matches it verbatim. */
        size_t n = strlen(lit->valuestring);
        if (n == 0) return jerr(c, p, "empty String pattern%s", NULL);
        char *esc = xmalloc(2 * n + 1);
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            unsigned char ch = (unsigned char)lit->valuestring[i];
            if (ch < 0x80 && !((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')) && ch > ' ')
                esc[k++] = '\\';
            esc[k++] = (char)ch;
        }
        snprintf(p, sizeof p, "%s.pattern.String", jpath);
        bool ok = compile_regex(c, p, esc, k, &lv->re);
        free(esc);
        if (!ok) return false;
    } else {
        return jerr(c, p, "expected {\"Regex\": ...} or {\"String\": ...}%s", NULL);
    }
    t->n_levels++;
    return true;
}

/* ByteLevel pre-tokenizer: must come last (it maps bytes to characters). */
static bool load_byte_level_pre(load_ctx *c, tokenizer *t, const cJSON *pt, const char *jpath) {
    char p[256];
    bool prefix, use_regex;
    snprintf(p, sizeof p, "%s.add_prefix_space", jpath);
    if (!get_bool(c, pt, "add_prefix_space", p, true, &prefix)) return false;
    snprintf(p, sizeof p, "%s.use_regex", jpath);
    if (!get_bool(c, pt, "use_regex", p, true, &use_regex)) return false;
    if (!prefix && !use_regex) return true;
    if (t->n_levels >= TOK_MAX_LEVELS) return jerr(c, jpath, "too many pre-tokenizers (at most 4 supported)%s", NULL);
    tok_level *lv = &t->levels[t->n_levels];
    memset(lv, 0, sizeof *lv);
    lv->add_prefix_space = prefix;
    if (use_regex && !compile_regex(c, jpath, GPT2_PATTERN, strlen(GPT2_PATTERN), &lv->re)) return false;
    t->n_levels++;
    return true;
}

static bool load_pre_tokenizer(load_ctx *c, tokenizer *t, const cJSON *root) {
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    if (!pre || cJSON_IsNull(pre))
        return jerr(c, "pre_tokenizer", "is null; a ByteLevel pre-tokenizer is required for byte-level BPE%s", NULL);
    const char *type;
    if (!get_type(c, pre, "pre_tokenizer", &type)) return false;
    if (strcmp(type, "ByteLevel") == 0) return load_byte_level_pre(c, t, pre, "pre_tokenizer");
    if (strcmp(type, "Split") == 0)
        return jerr(c, "pre_tokenizer", "a Split without a following ByteLevel is not supported%s", NULL);
    if (strcmp(type, "Sequence") != 0)
        return jerr(c, "pre_tokenizer.type", "pre-tokenizer \"%s\" is not supported (only Sequence, Split, ByteLevel)", type);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(pre, "pretokenizers");
    if (!cJSON_IsArray(list)) return jerr(c, "pre_tokenizer.pretokenizers", "expected an array, found %s", json_kind(list));
    int n = cJSON_GetArraySize(list), i = 0;
    bool seen_byte_level = false;
    const cJSON *pt;
    cJSON_ArrayForEach(pt, list) {
        char p[256];
        snprintf(p, sizeof p, "pre_tokenizer.pretokenizers[%d]", i);
        if (!get_type(c, pt, p, &type)) return false;
        char pt_type[280];
        snprintf(pt_type, sizeof pt_type, "%s.type", p);
        if (strcmp(type, "Split") == 0) {
            if (!load_split(c, t, pt, p)) return false;
        } else if (strcmp(type, "ByteLevel") == 0) {
            if (i != n - 1) return jerr(c, pt_type, "ByteLevel must be the last pre-tokenizer%s", NULL);
            if (!load_byte_level_pre(c, t, pt, p)) return false;
            seen_byte_level = true;
        } else {
            return jerr(c, pt_type, "pre-tokenizer \"%s\" is not supported (only Split and ByteLevel)", type);
        }
        i++;
    }
    if (!seen_byte_level)
        return jerr(c, "pre_tokenizer.pretokenizers", "no ByteLevel pre-tokenizer; byte-level BPE needs one%s", NULL);
    return true;
}

static bool load_normalizer(load_ctx *c, tokenizer *t, const cJSON *root) {
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    t->normalizer = 0;
    if (!norm || cJSON_IsNull(norm)) return true;
    const char *type;
    if (!get_type(c, norm, "normalizer", &type)) return false;
    if (strcmp(type, "NFC") == 0) {
        t->normalizer = 1;
        return true;
    }
    return jerr(c, "normalizer.type", "normalizer \"%s\" is not supported (only NFC or null)", type);
}

static bool load_decoder(load_ctx *c, const cJSON *root) {
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    if (!dec || cJSON_IsNull(dec)) return jerr(c, "decoder", "is null; a ByteLevel decoder is required%s", NULL);
    const char *type;
    if (!get_type(c, dec, "decoder", &type)) return false;
    if (strcmp(type, "ByteLevel") != 0)
        return jerr(c, "decoder.type", "decoder \"%s\" is not supported (only ByteLevel)", type);
    return true;
}

/* Model vocabulary and merges. */
static const char *merge_path(char *p, size_t n, uint32_t rank) {
    snprintf(p, n, "model.merges[%u]", rank);
    return p;
}

/* n_added: number of added tokens, which may take ids after the model's (see load_added). */
static bool load_model(load_ctx *c, tokenizer *t, const cJSON *root, int n_added) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) return jerr(c, "model", "expected an object, found %s", json_kind(model));
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (type && !cJSON_IsString(type)) return jerr(c, "model.type", "expected a string, found %s", json_kind(type));
    if (!type) return jerr(c, "model.type", "missing (only BPE models are supported)%s", NULL);
    if (strcmp(type->valuestring, "BPE") != 0)
        return jerr(c, "model.type", "model \"%s\" is not supported (only BPE)", type->valuestring);
    bool byte_fallback;
    if (!get_bool(c, model, "byte_fallback", "model.byte_fallback", false, &byte_fallback)) return false;
    if (byte_fallback) return jerr(c, "model.byte_fallback", "byte_fallback: true is not supported%s", NULL);
    if (!get_bool(c, model, "ignore_merges", "model.ignore_merges", false, &t->ignore_merges)) return false;
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (dropout && !cJSON_IsNull(dropout) && !(cJSON_IsNumber(dropout) && dropout->valuedouble == 0))
        return jerr(c, "model.dropout", "BPE dropout is not supported (must be null)%s", NULL);
    const char *affix_keys[2] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int k = 0; k < 2; k++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(model, affix_keys[k]);
        char p[64];
        snprintf(p, sizeof p, "model.%s", affix_keys[k]);
        if (a && !cJSON_IsNull(a) && !(cJSON_IsString(a) && a->valuestring[0] == '\0'))
            return jerr(c, p, "a non-empty value is not supported (must be null or \"\")%s", NULL);
    }

    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!cJSON_IsObject(vocab)) return jerr(c, "model.vocab", "expected an object, found %s", json_kind(vocab));
    int32_t max_id = -1;
    size_t total_len = 0, count = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        int32_t id;
        double v = cJSON_IsNumber(e) ? e->valuedouble : -1;
        if (!(v >= 0 && v < TOK_MAX_ID && v == floor(v))) { /* path only built on error: this loop is hot */
            char p[300];
            snprintf(p, sizeof p, "model.vocab[\"%.200s\"]", e->string);
            return get_id(c, e, p, &id);
        }
        id = (int32_t)v;
        if (id > max_id) max_id = id;
        total_len += strlen(e->string);
        count++;
    }
    if (count == 0) return jerr(c, "model.vocab", "is empty%s", NULL);
    t->model_count = (int32_t)count;
    t->vocab_size = max_id + 1; /* raised by load_added */
    /* Tables indexed by id are sized for the added tokens too: their ids are at most count + n_added - 1. */
    size_t vs = (size_t)S2D_MAX((size_t)max_id + 1, count + (size_t)n_added);
    t->id_capacity = (int32_t)vs;
    t->model_str = xmalloc(total_len + count + 1); /* each token NUL-terminated for tok_id_to_token */
    t->model_off = xcalloc(vs + 1, sizeof(uint32_t));
    t->model_len = xcalloc(vs, sizeof(uint32_t));
    bool *seen = xcalloc(vs, 1);
    t->vocab_mask = table_mask_for(count);
    t->vocab_map = xmalloc(sizeof(tok_str_slot) * ((size_t)t->vocab_mask + 1));
    for (size_t i = 0; i <= t->vocab_mask; i++) t->vocab_map[i].id = -1;
    size_t used = 0;
    cJSON_ArrayForEach(e, vocab) {
        int32_t id = (int32_t)e->valuedouble;
        size_t n = strlen(e->string);
        if (n == 0) {
            free(seen);
            return jerr(c, "model.vocab", "contains an empty token string%s", NULL);
        }
        if (seen[id]) {
            char p[64];
            snprintf(p, sizeof p, "model.vocab (id %d)", (int)id);
            free(seen);
            return jerr(c, p, "two tokens share the id; \"%.200s\" is the second", e->string);
        }
        seen[id] = true;
        memcpy(t->model_str + used, e->string, n + 1);
        t->model_off[id] = (uint32_t)used;
        t->model_len[id] = (uint32_t)n;
        used += n + 1;
        if (tok_vocab_lookup(t, e->string, n) >= 0) {
            free(seen);
            return jerr(c, "model.vocab", "token \"%.200s\" appears twice", e->string);
        }
        vocab_insert(t, id);
    }
    free(seen);

    /* Every byte's character must be a token: the first BPE symbols are single bytes. */
    for (int b = 0; b < 256; b++) {
        t->byte_id[b] = tok_vocab_lookup(t, tok_byte_char[b], tok_byte_char_len[b]);
        if (t->byte_id[b] < 0) {
            char detail[64];
            snprintf(detail, sizeof detail, "0x%02X", b);
            return jerr(c, "model.vocab", "has no token for the byte-level character of byte %s (incomplete byte alphabet is not supported)", detail);
        }
    }

    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsArray(merges)) return jerr(c, "model.merges", "expected an array, found %s", json_kind(merges));
    size_t n_merges = (size_t)cJSON_GetArraySize(merges);
    t->merge_mask = table_mask_for(n_merges);
    t->merge_map = xmalloc(sizeof(tok_merge_slot) * ((size_t)t->merge_mask + 1));
    for (size_t i = 0; i <= t->merge_mask; i++) t->merge_map[i].key = UINT64_MAX;
    size_t cat_cap = 256;
    char *cat = xmalloc(cat_cap);
    uint32_t rank = 0;
    cJSON_ArrayForEach(e, merges) {
        char p[64]; /* the JSON path, built only for an error: this loop runs 280k times for Llama 3 */
        const char *a, *b;
        size_t la, lb;
        if (cJSON_IsString(e)) { /* "a b": exactly one space */
            const char *sp = strchr(e->valuestring, ' ');
            if (!sp || strchr(sp + 1, ' ') || sp == e->valuestring || sp[1] == '\0') {
                free(cat);
                return jerr(c, merge_path(p, sizeof p, rank), "expected \"left right\" (two tokens separated by one space), found \"%.200s\"", e->valuestring);
            }
            a = e->valuestring;
            la = (size_t)(sp - a);
            b = sp + 1;
            lb = strlen(b);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
                   cJSON_IsString(e->child->next)) { /* ["a", "b"] */
            a = e->child->valuestring;
            la = strlen(a);
            b = e->child->next->valuestring;
            lb = strlen(b);
        } else {
            free(cat);
            return jerr(c, merge_path(p, sizeof p, rank), "expected \"left right\" or [\"left\", \"right\"], found %s", json_kind(e));
        }
        int32_t ia = tok_vocab_lookup(t, a, la), ib = tok_vocab_lookup(t, b, lb);
        if (la + lb > cat_cap) {
            cat_cap = la + lb;
            cat = xrealloc(cat, cat_cap);
        }
        memcpy(cat, a, la);
        memcpy(cat + la, b, lb);
        int32_t inew = tok_vocab_lookup(t, cat, la + lb);
        if (ia < 0 || ib < 0 || inew < 0) {
            char which[600];
            snprintf(which, sizeof which, "\"%.*s\"", (int)(ia < 0 ? S2D_MIN(la, 200) : ib < 0 ? S2D_MIN(lb, 200) : S2D_MIN(la + lb, 400)),
                     ia < 0 ? a : ib < 0 ? b : cat);
            free(cat);
            return jerr(c, merge_path(p, sizeof p, rank), "token %s is not in model.vocab", which);
        }
        merge_insert(t, ia, ib, rank, inew);
        rank++;
    }
    free(cat);
    return true;
}

static int cmp_added_len_desc(const void *pa, const void *pb, void *ctx) {
    const tok_added *added = ctx;
    int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    if (added[a].len != added[b].len) return added[a].len > added[b].len ? -1 : 1;
    return a < b ? -1 : a > b;
}

/* Added tokens. Ids follow HF's deserialisation, not the file's "id" field: a content already known (an
 * earlier added token or a model token) keeps that id; a new one takes the next id after the model
 * vocabulary (HF warns when the file disagrees; so do we). */
static bool load_added(load_ctx *c, tokenizer *t, const cJSON *root) {
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (!list || cJSON_IsNull(list)) return true;
    if (!cJSON_IsArray(list)) return jerr(c, "added_tokens", "expected an array, found %s", json_kind(list));
    int n = cJSON_GetArraySize(list);
    t->added = xcalloc((size_t)(n > 0 ? n : 1), sizeof(tok_added));
    size_t total = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, list) {
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (cJSON_IsString(content)) total += strlen(content->valuestring) + 1;
    }
    t->added_str = xmalloc(total + 1);
    size_t used = 0;
    int i = 0, kept = 0;
    int32_t max_added = -1;
    cJSON_ArrayForEach(e, list) {
        char p[64], q[96];
        snprintf(p, sizeof p, "added_tokens[%d]", i++);
        if (!cJSON_IsObject(e)) return jerr(c, p, "expected an object, found %s", json_kind(e));
        tok_added *a = &t->added[kept];
        int32_t file_id;
        snprintf(q, sizeof q, "%s.id", p);
        if (!get_id(c, cJSON_GetObjectItemCaseSensitive(e, "id"), q, &file_id)) return false;
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
        snprintf(q, sizeof q, "%s.content", p);
        if (!cJSON_IsString(content) || content->valuestring[0] == '\0')
            return jerr(c, q, "expected a non-empty string, found %s", json_kind(content));
        size_t len = strlen(content->valuestring);
        if (tok_utf8_valid_prefix((const unsigned char *)content->valuestring, len) != len)
            return jerr(c, q, "is not valid UTF-8%s", NULL);
        memcpy(t->added_str + used, content->valuestring, len + 1);
        a->content = t->added_str + used;
        a->len = (uint32_t)len;
        used += len + 1;
        static const char *const flags[5] = {"lstrip", "rstrip", "single_word", "normalized", "special"};
        bool *dst[5] = {&a->lstrip, &a->rstrip, &a->single_word, &a->normalized, &a->special};
        for (int k = 0; k < 5; k++) {
            snprintf(q, sizeof q, "%s.%s", p, flags[k]);
            /* HF's default for "normalized" is !special. */
            bool def = k == 3 ? !(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "special"))) : false;
            if (!get_bool(c, e, flags[k], q, def, dst[k])) return false;
        }
        int dup = -1;
        for (int j = 0; j < kept && dup < 0; j++)
            if (t->added[j].len == a->len && memcmp(t->added[j].content, a->content, a->len) == 0) dup = j;
        if (dup >= 0) {
            const tok_added *d = &t->added[dup];
            if (d->lstrip != a->lstrip || d->rstrip != a->rstrip || d->single_word != a->single_word ||
                d->normalized != a->normalized || d->special != a->special)
                return jerr(c, p, "content \"%.200s\" repeats an earlier added token with other flags (not supported)", a->content);
            continue; /* identical repeat: HF skips it */
        }
        int32_t model_id = tok_vocab_lookup(t, a->content, a->len);
        if (model_id >= 0) a->id = model_id;
        else a->id = max_added >= t->model_count ? max_added + 1 : t->model_count;
        if (a->id != file_id)
            log_warn("%s: %s: token \"%s\" has id %d in the file but %d in Hugging Face tokenizers; using %d", c->file, p,
                     a->content, (int)file_id, (int)a->id, (int)a->id);
        if (a->id > max_added) max_added = a->id;
        if (a->normalized) t->n_added_normalized++;
        kept++;
    }
    t->n_added = kept;
    if (max_added + 1 > t->vocab_size) t->vocab_size = max_added + 1;
    CHECK(t->vocab_size <= t->id_capacity, "added token ids outgrew their table");
    return true;
}

/* Per-pass index of added tokens by first byte, longest first (leftmost-longest matching). */
static void build_added_index(tokenizer *t) {
    for (int pass = 0; pass < 2; pass++) {
        int count[256] = {0};
        for (int i = 0; i < t->n_added; i++)
            if (t->added[i].normalized == (pass == 1)) count[(unsigned char)t->added[i].content[0]]++;
        t->cand_start[pass][0] = 0;
        for (int b = 0; b < 256; b++) t->cand_start[pass][b + 1] = t->cand_start[pass][b] + count[b];
        t->added_cand[pass] = xmalloc(sizeof(int32_t) * (size_t)(t->cand_start[pass][256] + 1));
        int fill[256];
        for (int b = 0; b < 256; b++) fill[b] = t->cand_start[pass][b];
        for (int i = 0; i < t->n_added; i++)
            if (t->added[i].normalized == (pass == 1)) t->added_cand[pass][fill[(unsigned char)t->added[i].content[0]]++] = i;
        for (int b = 0; b < 256; b++)
            qsort_r(t->added_cand[pass] + t->cand_start[pass][b], (size_t)count[b], sizeof(int32_t), cmp_added_len_desc, t->added);
    }
}

/* HF's ByteLevel decoder per token: if every character is a byte-level character, the bytes; otherwise the
 * token's own UTF-8. Appends to dst, returns the number of bytes written. */
static size_t decode_token(const char *s, size_t n, char *dst) {
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c0 = (unsigned char)s[i];
        uint32_t cp;
        size_t w;
        if (c0 < 0x80) cp = c0, w = 1;
        else if ((c0 & 0xE0) == 0xC0 && i + 1 < n) cp = ((uint32_t)(c0 & 0x1F) << 6) | ((unsigned char)s[i + 1] & 0x3F), w = 2;
        else cp = 0xFFFFFFFFu, w = 1;
        if (cp >= 324 || g_char_byte[cp] < 0) {
            memcpy(dst, s, n);
            return n;
        }
        dst[k++] = (char)g_char_byte[cp];
        i += w;
    }
    return k;
}

static void build_decode_table(tokenizer *t) {
    size_t vs = (size_t)t->vocab_size;
    t->added_of_id = xmalloc(sizeof(int32_t) * vs);
    for (size_t i = 0; i < vs; i++) t->added_of_id[i] = -1;
    for (int i = 0; i < t->n_added; i++) t->added_of_id[t->added[i].id] = i;
    size_t total = 0;
    t->has_token = xcalloc(vs, 1);
    for (size_t id = 0; id < vs; id++) {
        int32_t a = t->added_of_id[id];
        total += a >= 0 ? t->added[a].len : t->model_len[id];
        t->has_token[id] = a >= 0 || t->model_len[id] > 0;
    }
    t->dec_str = xmalloc(total + 1);
    t->dec_off = xmalloc(sizeof(uint32_t) * (vs + 1));
    size_t used = 0;
    for (size_t id = 0; id < vs; id++) {
        t->dec_off[id] = (uint32_t)used;
        int32_t a = t->added_of_id[id];
        if (a >= 0) used += decode_token(t->added[a].content, t->added[a].len, t->dec_str + used);
        else if (t->model_len[id] > 0) used += decode_token(t->model_str + t->model_off[id], t->model_len[id], t->dec_str + used);
    }
    t->dec_off[vs] = (uint32_t)used;
}

static void cache_init(tokenizer *t) {
    tok_cache *c = xcalloc(1, sizeof *c);
    CHECK(pthread_mutex_init(&c->lock, NULL) == 0, "pthread_mutex_init failed");
    c->mask = (1u << 16) - 1;
    c->max_count = (c->mask + 1) / 2;
    c->slots = xcalloc((size_t)c->mask + 1, sizeof(tok_cache_slot));
    c->key_cap = (size_t)c->max_count * 24;
    c->ids_cap = (size_t)c->max_count * 8;
    c->keys = xmalloc(c->key_cap);
    c->ids = xmalloc(sizeof(int32_t) * c->ids_cap);
    t->cache = c;
}

bool tok_load(const char *dir_or_file, tokenizer **out, s2d_err *err) {
    tok_byte_level_init();
    *out = NULL;
    char path[4096];
    struct stat st;
    if (stat(dir_or_file, &st) != 0) return err_set(err, "%s: cannot open tokenizer: %s", dir_or_file, strerror(errno));
    if (S_ISDIR(st.st_mode)) path_join(path, sizeof path, dir_or_file, "tokenizer.json");
    else snprintf(path, sizeof path, "%s", dir_or_file);
    char *text;
    size_t len;
    if (!read_file(path, &text, &len, err)) return false;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        long line = 1;
        for (const char *p = text; end && p < end; p++) line += *p == '\n';
        free(text);
        return err_set(err, "%s:%ld: invalid JSON", path, line);
    }
    /* cJSON ends a string at a decoded U+0000, so "\u0000" in a token would silently cut its content */
    for (const char *p = text; (p = strstr(p, "u0000")); p++) {
        size_t bs = 0;
        while (p - bs > text && p[-1 - (long)bs] == '\\') bs++;
        if (bs % 2 == 1) {
            long line = 1;
            for (const char *q = text; q < p; q++) line += *q == '\n';
            cJSON_Delete(root);
            free(text);
            return err_set(err, "%s:%ld: the escape \\u0000 (U+0000) is not supported in a tokenizer (it would cut the "
                           "string it is in)", path, line);
        }
    }
    free(text);
    tokenizer *t = xcalloc(1, sizeof *t);
    snprintf(t->path, sizeof t->path, "%s", path);
    load_ctx c = {t->path, err};
    bool ok = cJSON_IsObject(root) || jerr(&c, "(root)", "expected a JSON object%s", NULL);
    for (int k = 0; ok && k < 2; k++) {
        const char *key = k == 0 ? "truncation" : "padding";
        const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, key);
        if (j && !cJSON_IsNull(j)) ok = jerr(&c, key, "must be null (truncation and padding are not supported)%s", NULL);
    }
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    ok = ok && load_model(&c, t, root, cJSON_IsArray(added) ? cJSON_GetArraySize(added) : 0);
    ok = ok && load_added(&c, t, root);
    ok = ok && load_normalizer(&c, t, root);
    ok = ok && load_pre_tokenizer(&c, t, root);
    ok = ok && load_decoder(&c, root);
    cJSON_Delete(root);
    if (!ok) {
        tok_free(t);
        return false;
    }
    build_added_index(t);
    build_decode_table(t);
    cache_init(t);
    *out = t;
    return true;
}

void tok_free(tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < TOK_MAX_LEVELS; i++)
        if (t->levels[i].re) onig_free(t->levels[i].re);
    if (t->cache) {
        pthread_mutex_destroy(&t->cache->lock);
        free(t->cache->slots);
        free(t->cache->keys);
        free(t->cache->ids);
        free(t->cache);
    }
    free(t->model_str);
    free(t->model_off);
    free(t->model_len);
    free(t->vocab_map);
    free(t->merge_map);
    free(t->added);
    free(t->added_str);
    free(t->added_of_id);
    free(t->added_cand[0]);
    free(t->added_cand[1]);
    free(t->dec_str);
    free(t->dec_off);
    free(t->has_token);
    free(t);
}

int tok_vocab_size(const tokenizer *t) { return t->vocab_size; }

int32_t tok_token_id(const tokenizer *t, const char *token) {
    size_t n = strlen(token);
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].len == n && memcmp(t->added[i].content, token, n) == 0) return t->added[i].id;
    return n ? tok_vocab_lookup(t, token, n) : -1;
}

const char *tok_id_to_token(const tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->vocab_size || !t->has_token[id]) return NULL;
    int32_t a = t->added_of_id[id];
    if (a >= 0) return t->added[a].content;
    return t->model_str + t->model_off[id];
}

const char *tok_token_bytes(const tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->vocab_size || !t->has_token[id]) return NULL;
    *len = t->dec_off[id + 1] - t->dec_off[id];
    return t->dec_str + t->dec_off[id];
}

void tok_ids_free(tok_ids *v) {
    free(v->ids);
    v->ids = NULL;
    v->n = v->cap = 0;
}

void tok_bytes_free(tok_bytes *b) {
    free(b->bytes);
    b->bytes = NULL;
    b->n = b->cap = 0;
}
