/* tokenizer_decode.c: ids → bytes (lossy UTF-8 as HF's decode), and the tokenizer side of a model directory. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/json.h"
#include "core/log.h"
#include "text/tokenizer_internal.h"

/* Length of the well-formed UTF-8 sequence starting at s[i] (1..4), or -(length of its longest valid
 * prefix, at least 1) when it is ill-formed: the unit that Rust's from_utf8_lossy replaces by one U+FFFD. */
static int utf8_seq(const unsigned char *s, size_t len, size_t i) {
    unsigned char c = s[i];
    if (c < 0x80) return 1;
    int need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c == 0xE0) need = 2, lo = 0xA0;
    else if (c == 0xED) need = 2, hi = 0x9F;
    else if (c >= 0xE1 && c <= 0xEF) need = 2;
    else if (c == 0xF0) need = 3, lo = 0x90;
    else if (c == 0xF4) need = 3, hi = 0x8F;
    else if (c >= 0xF1 && c <= 0xF3) need = 3;
    else return -1;
    for (int k = 1; k <= need; k++) {
        if (i + (size_t)k >= len) return -k;
        unsigned char d = s[i + (size_t)k];
        if (d < (k == 1 ? lo : 0x80) || d > (k == 1 ? hi : 0xBF)) return -k;
    }
    return need + 1;
}

size_t tok_utf8_valid_prefix(const unsigned char *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        if (i + 8 <= len) { /* ASCII fast path, 8 bytes at a time */
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & 0x8080808080808080ull)) {
                i += 8;
                continue;
            }
        }
        int k = utf8_seq(s, len, i);
        if (k < 0) return i;
        i += (size_t)k;
    }
    return len;
}

bool tok_decode(const tokenizer *t, const int32_t *ids, size_t n, tok_bytes *out, s2d_err *err) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->vocab_size || !t->has_token[id])
            return err_set(err, "decode: id %d at position %zu is not a token of %s (vocabulary size %d)", (int)id, i,
                           t->path, t->vocab_size);
        total += t->dec_off[id + 1] - t->dec_off[id];
    }
    /* Worst case: every byte becomes U+FFFD (3 bytes). */
    size_t need = 3 * total + 1;
    if (out->cap < need) {
        out->bytes = xrealloc(out->bytes, need);
        out->cap = need;
    }
    /* Gather the raw bytes at the end of the buffer, then rewrite them lossily from the front; the write
     * position never overtakes the read position because the output is at most 3x and starts 2x earlier. */
    unsigned char *raw = (unsigned char *)out->bytes + 2 * total;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t a = t->dec_off[ids[i]], b = t->dec_off[ids[i] + 1];
        memcpy(raw + k, t->dec_str + a, b - a);
        k += b - a;
    }
    char *dst = out->bytes;
    size_t w = 0;
    for (size_t i = 0; i < total;) {
        int len = utf8_seq(raw, total, i);
        if (len > 0) {
            memmove(dst + w, raw + i, (size_t)len);
            w += (size_t)len;
            i += (size_t)len;
        } else {
            dst[w++] = (char)0xEF, dst[w++] = (char)0xBF, dst[w++] = (char)0xBD;
            i += (size_t)(-len);
        }
    }
    dst[w] = '\0';
    out->n = w;
    return true;
}

/* ---- the tokenizer side of a Hugging Face model directory ---- */

/* Files a model directory carries for its tokenizer, copied with a model when present (tokenizer.json is
 * required): stage outputs and `s2d export` alike. */
static const char *const TOKENIZER_FILES[] = {"tokenizer.json",   "tokenizer_config.json", "special_tokens_map.json",
                                              "generation_config.json", "chat_template.jinja", "vocab.json",
                                              "merges.txt",       "added_tokens.json"};

static bool copy_atomic(const char *src, const char *dst, s2d_err *err) {
    char *data;
    size_t len;
    if (!read_file(src, &data, &len, err)) return false;
    atomic_file af;
    bool ok = atomic_open(&af, dst, err);
    if (ok && fwrite(data, 1, len, af.fp) != len) atomic_abort(&af), ok = err_set(err, "%s: write failed: %s", dst, strerror(errno));
    else if (ok) ok = atomic_commit(&af, err);
    free(data);
    return ok;
}

bool tok_copy_files(const char *src, const char *dst_dir, const char *bos_token, const char *eos_token, s2d_err *err) {
    char from[4096], to[4096];
    struct stat st;
    bool is_dir = stat(src, &st) == 0 && S_ISDIR(st.st_mode);
    bool have_config = false;
    if (!is_dir) { /* a tokenizer.json file given directly */
        path_join(to, sizeof to, dst_dir, "tokenizer.json");
        if (!copy_atomic(src, to, err)) return false;
    } else {
        path_join(from, sizeof from, src, "tokenizer.json");
        if (access(from, R_OK) != 0) return err_set(err, "%s: cannot read: %s", from, strerror(errno));
        for (size_t i = 0; i < sizeof TOKENIZER_FILES / sizeof *TOKENIZER_FILES; i++) {
            path_join(from, sizeof from, src, TOKENIZER_FILES[i]);
            if (access(from, F_OK) != 0) continue;
            path_join(to, sizeof to, dst_dir, TOKENIZER_FILES[i]);
            if (!copy_atomic(from, to, err)) return false;
            have_config |= strcmp(TOKENIZER_FILES[i], "tokenizer_config.json") == 0;
        }
    }
    if (have_config) return true;
    /* None to copy: a minimal one, so AutoTokenizer loads tokenizer.json with the model's bos/eos tokens. */
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "tokenizer_class", "PreTrainedTokenizerFast");
    if (bos_token) cJSON_AddStringToObject(c, "bos_token", bos_token);
    if (eos_token) cJSON_AddStringToObject(c, "eos_token", eos_token);
    char *text = cJSON_Print(c);
    cJSON_Delete(c);
    CHECK(text, "out of memory printing tokenizer_config.json");
    path_join(to, sizeof to, dst_dir, "tokenizer_config.json");
    atomic_file af;
    bool ok = atomic_open(&af, to, err);
    if (ok && (fputs(text, af.fp) < 0 || fputc('\n', af.fp) < 0))
        atomic_abort(&af), ok = err_set(err, "%s: write failed: %s", to, strerror(errno));
    else if (ok) ok = atomic_commit(&af, err);
    cJSON_free(text);
    return ok;
}
