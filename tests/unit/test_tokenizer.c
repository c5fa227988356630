/* test_tokenizer: the HF byte-level BPE tokenizer against outside references.
 *  - every line of the Qwen3 and Llama 3.1 reference encodings (transformers.js port, checked against HF
 *    tokenizers): exact ids, and decode(encode(text)) == normalizer(text) byte for byte;
 *  - the hand-written pre-tokenizer matcher against Oniguruma alone (fixtures, MATH text, random strings);
 *  - tiny tokenizer.json files whose expected ids were computed with HF tokenizers 0.23.3 (Python):
 *    merges in both spellings, merge-rank order, ignore_merges, added tokens (longest match, lstrip,
 *    rstrip, single_word), lossy UTF-8 decoding (Rust's from_utf8_lossy == Python's errors='replace');
 *  - every unsupported feature is a load error naming tokenizer.json and the JSON path. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <utf8proc.h>

#include "core/common.h"
#include "test.h"
#include "text/tokenizer.h"

static char g_root[2048];
static char g_tmp[4096];

static void fixture_path(char *out, size_t n, const char *rel) { snprintf(out, n, "%s/tests/fixtures/%s", g_root, rel); }

static tokenizer *load_real(const char *name) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/tokenizers/%s", g_root, name);
    s2d_err err;
    tokenizer *t = NULL;
    bool ok = tok_load(dir, &t, &err);
    EXPECT(ok, "load %s: %s", name, err.msg);
    return ok ? t : NULL;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Reference encodings */

static void check_reference(const char *name, bool nfc) {
    tokenizer *t = load_real(name);
    if (!t) return;
    char path[4096], rel[256];
    snprintf(rel, sizeof rel, "tokenizer/%s-encodings.jsonl", name);
    fixture_path(path, sizeof path, rel);
    FILE *fp = fopen(path, "r");
    EXPECT(fp != NULL, "open %s", path);
    if (!fp) return;
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0, ok_ids = 0, ok_text = 0;
    tok_ids ids = {0};
    tok_bytes dec = {0};
    s2d_err err;
    while (getline(&line, &cap, fp) > 0) {
        lineno++;
        cJSON *j = cJSON_Parse(line);
        const cJSON *text = cJSON_GetObjectItem(j, "text"), *want = cJSON_GetObjectItem(j, "ids");
        EXPECT(cJSON_IsString(text) && cJSON_IsArray(want), "%s:%ld: bad fixture line", path, lineno);
        if (!cJSON_IsString(text) || !cJSON_IsArray(want)) {
            cJSON_Delete(j);
            continue;
        }
        size_t len = strlen(text->valuestring);
        /* Twice: the first pass runs BPE, the second is served from the pre-token cache. */
        for (int pass = 0; pass < 2; pass++) {
            ids.n = 0;
            int n = tok_encode(t, text->valuestring, len, &ids, &err);
            bool same = n == cJSON_GetArraySize(want);
            int k = 0;
            const cJSON *w;
            cJSON_ArrayForEach(w, want) {
                if (!same) break;
                same = ids.ids[k++] == (int32_t)w->valuedouble;
            }
            EXPECT(same, "%s line %ld (pass %d): ids differ from the reference (got %d ids, want %d)", name, lineno, pass, n,
                   cJSON_GetArraySize(want));
            if (same && pass == 1) ok_ids++;
        }
        /* decode(encode(text)) == normalizer(text): NFC for Qwen3, the text itself for Llama (no normalizer). */
        bool decoded = tok_decode(t, ids.ids, ids.n, &dec, &err);
        EXPECT(decoded, "%s line %ld: decode: %s", name, lineno, err.msg);
        utf8proc_uint8_t *norm = NULL;
        utf8proc_ssize_t nlen = (utf8proc_ssize_t)len;
        if (nfc) nlen = utf8proc_map((const utf8proc_uint8_t *)text->valuestring, (utf8proc_ssize_t)len, &norm,
                                     UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        const char *expect = nfc ? (const char *)norm : text->valuestring;
        bool same_text = decoded && nlen >= 0 && dec.n == (size_t)nlen && memcmp(dec.bytes, expect, dec.n) == 0;
        EXPECT(same_text, "%s line %ld: decode(encode(text)) != %s(text)", name, lineno, nfc ? "NFC" : "");
        ok_text += same_text;
        free(norm);
        cJSON_Delete(j);
    }
    EXPECT(lineno == 263, "%s: %ld reference lines, expected 263", name, lineno);
    fprintf(stderr, "    %s: %ld/%ld lines with exact ids, %ld/%ld exact round trips\n", name, ok_ids, lineno, ok_text, lineno);
    free(line);
    fclose(fp);
    tok_ids_free(&ids);
    tok_bytes_free(&dec);
    tok_free(t);
}

static void test_reference_qwen3(void) { check_reference("qwen3", true); }
static void test_reference_llama3_1(void) { check_reference("llama3_1", false); }

static void test_lookups(void) {
    tokenizer *q = load_real("qwen3"), *l = load_real("llama3_1");
    if (!q || !l) return;
    /* Values from HF tokenizers: get_vocab_size(), token_to_id(). */
    EXPECT(tok_vocab_size(q) == 151669, "qwen3 vocab size %d", tok_vocab_size(q));
    EXPECT(tok_vocab_size(l) == 128256, "llama3_1 vocab size %d", tok_vocab_size(l));
    EXPECT(tok_token_id(q, "<|im_end|>") == 151645, "qwen3 <|im_end|>");
    EXPECT(tok_token_id(q, "<think>") == 151667, "qwen3 <think>");
    EXPECT(tok_token_id(q, "\xC4\xA0the") == 279, "qwen3 Ġthe");
    EXPECT(tok_token_id(l, "<|eot_id|>") == 128009, "llama <|eot_id|>");
    EXPECT(tok_token_id(l, "\xC4\xA0the") == 279, "llama Ġthe");
    EXPECT(tok_token_id(l, "<|im_end|>") == -1, "llama has no <|im_end|>");
    EXPECT_STREQ(tok_id_to_token(q, 151645), "<|im_end|>");
    EXPECT_STREQ(tok_id_to_token(q, 279), "\xC4\xA0the");
    EXPECT(tok_id_to_token(q, 151669) == NULL && tok_id_to_token(q, -1) == NULL, "out-of-range ids have no token");
    size_t n = 0;
    const char *b = tok_token_bytes(q, 279, &n);
    EXPECT(b && n == 4 && memcmp(b, " the", 4) == 0, "token bytes of 279");

    /* Added tokens inside text; a partial one is ordinary text (HF: [64,151645,65,151667,66,27,91,318,6213]). */
    const char *text = "a<|im_end|>b<think>c<|im_end";
    int32_t want[] = {64, 151645, 65, 151667, 66, 27, 91, 318, 6213};
    int32_t buf[16];
    s2d_err err;
    int got = tok_encode_buf(q, text, strlen(text), buf, 16, &err);
    EXPECT(got == 9 && memcmp(buf, want, sizeof want) == 0, "added tokens inside text (got %d ids)", got);
    EXPECT(tok_encode_buf(q, text, strlen(text), buf, 3, &err) == -1 && strstr(err.msg, "needs 9 ids"),
           "small buffer is an error: %s", err.msg);

    /* Invalid UTF-8 input is an error naming the offset. */
    tok_ids ids = {0};
    EXPECT(tok_encode(q, "ab\xC3(", 4, &ids, &err) == -1 && strstr(err.msg, "offset 2"), "bad UTF-8: %s", err.msg);
    /* Empty text gives no ids; NUL bytes are text like any other. */
    EXPECT(tok_encode(q, "", 0, &ids, &err) == 0, "empty text");
    EXPECT(tok_encode(q, "a\0b", 3, &ids, &err) == 3, "NUL inside text");
    /* Decoding an id without a token is an error. */
    tok_bytes dec = {0};
    int32_t bad[] = {5, 151669};
    EXPECT(!tok_decode(q, bad, 2, &dec, &err) && strstr(err.msg, "position 1"), "bad id: %s", err.msg);
    tok_ids_free(&ids);
    tok_bytes_free(&dec);
    tok_free(q);
    tok_free(l);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Fast matcher vs Oniguruma */

typedef struct {
    size_t n, cap;
    size_t *len;
    char *bytes;
    size_t bytes_n, bytes_cap;
} piece_list;

static void collect(const char *piece, size_t len, void *ctx) {
    piece_list *p = ctx;
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 64;
        p->len = xrealloc(p->len, sizeof(size_t) * p->cap);
    }
    p->len[p->n++] = len;
    if (p->bytes_n + len > p->bytes_cap) {
        p->bytes_cap = 2 * (p->bytes_n + len);
        p->bytes = xrealloc(p->bytes, p->bytes_cap);
    }
    memcpy(p->bytes + p->bytes_n, piece, len);
    p->bytes_n += len;
}

static bool same_pieces(const tokenizer *t, const char *s, size_t n) {
    piece_list a = {0}, b = {0};
    s2d_err err;
    long na = tok_pretokenize(t, s, n, true, collect, &a, &err);
    long nb = tok_pretokenize(t, s, n, false, collect, &b, &err);
    bool same = na == nb && a.n == b.n && a.bytes_n == b.bytes_n &&
                (a.n == 0 || memcmp(a.len, b.len, sizeof(size_t) * a.n) == 0) &&
                (a.bytes_n == 0 || memcmp(a.bytes, b.bytes, a.bytes_n) == 0);
    free(a.len);
    free(a.bytes);
    free(b.len);
    free(b.bytes);
    return same;
}

static void check_fast_path(const char *name) {
    tokenizer *t = load_real(name);
    if (!t) return;
    EXPECT(tok_has_fast_path(t), "%s: its Split regex should use the fast matcher", name);
    /* All ASCII characters and tricky non-ASCII ones (ſ folds to s, K is the Kelvin sign, Unicode spaces,
     * non-ASCII letters and digits, a combining mark, an emoji). */
    static const char *const alphabet[] = {
        "\xC5\xBF", "\xE2\x84\xAA", "\xC2\xA0", "\xC2\x85", "\xE3\x80\x80", "\xE2\x80\xA8", "\xC3\xA9", "\xE6\x95\xB0",
        "\xD9\xA1", "\xCC\x81", "\xF0\x9F\x99\x82", "\xCE\xA9", "\xE2\x88\x91", "\xC2\xB2", "\xE2\x80\x8B", "'",
        "s", "S", "t", "re", "VE", "m", "ll", "d", " ", "\n", "\r", "\t", "1", "23", "(", "\\", "$", "x"};
    const size_t n_alpha = S2D_ARRAY_LEN(alphabet);
    uint64_t state = 0x2545F4914F6CDD1Dull;
    char buf[512];
    int mismatches = 0;
    for (int trial = 0; trial < 3000; trial++) {
        size_t len = 0;
        int count = (int)(state >> 59) + (trial % 7);
        for (int k = 0; k < count; k++) {
            state ^= state << 13, state ^= state >> 7, state ^= state << 17;
            if ((state >> 32) % 3 == 0) { /* any ASCII byte but NUL */
                buf[len++] = (char)(1 + (state >> 40) % 127);
            } else {
                const char *a = alphabet[(state >> 40) % n_alpha];
                memcpy(buf + len, a, strlen(a));
                len += strlen(a);
            }
        }
        if (!same_pieces(t, buf, len) && mismatches++ < 5) {
            fprintf(stderr, "    pre-token mismatch on: ");
            for (size_t i = 0; i < len; i++) fprintf(stderr, "%02x", (unsigned char)buf[i]);
            fputc('\n', stderr);
        }
    }
    EXPECT(mismatches == 0, "%s: %d random strings split differently by the fast matcher and Oniguruma", name, mismatches);
    /* Every pair of ASCII characters, each followed by a third so lookahead matters. */
    int pair_mismatch = 0;
    for (int a = 1; a < 128; a++)
        for (int b = 1; b < 128; b++) {
            char s3[4] = {(char)a, (char)b, ' ', 'x'};
            pair_mismatch += !same_pieces(t, s3, 4) + !same_pieces(t, s3, 2);
        }
    EXPECT(pair_mismatch == 0, "%s: %d ASCII pairs split differently", name, pair_mismatch);
    char path[4096];
    fixture_path(path, sizeof path, "tokenizer/math_sample.txt");
    char *text;
    size_t len;
    s2d_err err;
    bool ok = read_file(path, &text, &len, &err);
    EXPECT(ok, "%s", err.msg);
    if (ok) {
        EXPECT(same_pieces(t, text, len), "%s: MATH sample splits differently", name);
        free(text);
    }
    tok_free(t);
}
static void test_fast_path_qwen3(void) { check_fast_path("qwen3"); }
static void test_fast_path_llama3_1(void) { check_fast_path("llama3_1"); }

/* ---------------------------------------------------------------------------------------------------- */
/* Tiny tokenizer.json files */

/* GPT-2 bytes_to_unicode, written independently of the library (the test's own reference). */
static void byte_char(int b, char out[3]) {
    int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    int cp = b;
    if (!printable) {
        int k = 0;
        for (int x = 0; x < b; x++)
            if (!((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF))) k++;
        cp = 256 + k;
    }
    utf8proc_ssize_t n = utf8proc_encode_char(cp, (utf8proc_uint8_t *)out);
    out[n] = '\0';
}

/* vocab: the 256 byte characters (id = byte) then ab=256 bc=257 abc=258 cd=259 xyz=260 xy=261;
 * merges by rank: b c, a b, a bc, c d, x y. */
static cJSON *tiny_json(bool pair_merges, bool ignore_merges) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON_AddItemToObject(root, "added_tokens", cJSON_CreateArray());
    cJSON_AddNullToObject(root, "normalizer");
    cJSON *pre = cJSON_AddObjectToObject(root, "pre_tokenizer");
    cJSON_AddStringToObject(pre, "type", "ByteLevel");
    cJSON_AddFalseToObject(pre, "add_prefix_space");
    cJSON_AddFalseToObject(pre, "trim_offsets");
    cJSON_AddFalseToObject(pre, "use_regex");
    cJSON_AddNullToObject(root, "post_processor");
    cJSON_AddItemToObject(root, "decoder", cJSON_Duplicate(pre, 1));
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddNullToObject(model, "continuing_subword_prefix");
    cJSON_AddNullToObject(model, "end_of_word_suffix");
    cJSON_AddFalseToObject(model, "fuse_unk");
    cJSON_AddFalseToObject(model, "byte_fallback");
    cJSON_AddBoolToObject(model, "ignore_merges", ignore_merges);
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    for (int b = 0; b < 256; b++) {
        char c[3];
        byte_char(b, c);
        cJSON_AddNumberToObject(vocab, c, b);
    }
    const char *extra[] = {"ab", "bc", "abc", "cd", "xyz", "xy"};
    for (int i = 0; i < 6; i++) cJSON_AddNumberToObject(vocab, extra[i], 256 + i);
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    const char *pairs[][2] = {{"b", "c"}, {"a", "b"}, {"a", "bc"}, {"c", "d"}, {"x", "y"}};
    for (int i = 0; i < 5; i++) {
        if (pair_merges) {
            cJSON *p = cJSON_CreateArray();
            cJSON_AddItemToArray(p, cJSON_CreateString(pairs[i][0]));
            cJSON_AddItemToArray(p, cJSON_CreateString(pairs[i][1]));
            cJSON_AddItemToArray(merges, p);
        } else {
            char s[16];
            snprintf(s, sizeof s, "%s %s", pairs[i][0], pairs[i][1]);
            cJSON_AddItemToArray(merges, cJSON_CreateString(s));
        }
    }
    return root;
}

static void add_added_full(cJSON *root, const char *content, int id, bool lstrip, bool rstrip, bool single_word,
                           bool normalized, bool special) {
    cJSON *a = cJSON_CreateObject();
    cJSON_AddNumberToObject(a, "id", id);
    cJSON_AddStringToObject(a, "content", content);
    cJSON_AddBoolToObject(a, "single_word", single_word);
    cJSON_AddBoolToObject(a, "lstrip", lstrip);
    cJSON_AddBoolToObject(a, "rstrip", rstrip);
    cJSON_AddBoolToObject(a, "normalized", normalized);
    cJSON_AddBoolToObject(a, "special", special);
    cJSON_AddItemToArray(cJSON_GetObjectItem(root, "added_tokens"), a);
}
static void add_added(cJSON *root, const char *content, int id, bool lstrip, bool rstrip, bool single_word) {
    add_added_full(root, content, id, lstrip, rstrip, single_word, false, true);
}

/* Writes json to $tmp/<sub>/tokenizer.json and loads it (deletes json). */
static bool load_json(cJSON *json, const char *sub, tokenizer **t, s2d_err *err) {
    char dir[4200], path[4300];
    snprintf(dir, sizeof dir, "%s/%s", g_tmp, sub);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    char *text = cJSON_PrintUnformatted(json);
    cJSON_Delete(json);
    FILE *fp = fopen(path, "w");
    CHECK(fp, "cannot write %s", path);
    fputs(text, fp);
    fclose(fp);
    free(text);
    *t = NULL;
    return tok_load(dir, t, err);
}

static bool encodes_to(tokenizer *t, const char *text, const int32_t *want, int n_want) {
    tok_ids ids = {0};
    s2d_err err;
    int n = tok_encode(t, text, strlen(text), &ids, &err);
    bool same = n == n_want && (n == 0 || memcmp(ids.ids, want, sizeof(int32_t) * (size_t)n) == 0);
    if (!same) {
        fprintf(stderr, "    \"%s\" ->", text);
        for (int i = 0; i < n; i++) fprintf(stderr, " %d", ids.ids[i]);
        fputc('\n', stderr);
    }
    tok_ids_free(&ids);
    return same;
}

static void test_merges_spellings(void) {
    /* HF: "abcd" -> [258, 100] (b+c has the best rank, then a+bc; left-to-right would give ab, cd). */
    const int32_t want[] = {258, 100};
    for (int pairs = 0; pairs < 2; pairs++) {
        tokenizer *t;
        s2d_err err;
        bool ok = load_json(tiny_json(pairs, false), pairs ? "merges_pairs" : "merges_strings", &t, &err);
        EXPECT(ok, "load: %s", err.msg);
        if (!ok) continue;
        EXPECT(encodes_to(t, "abcd", want, 2), "merges spelled as %s", pairs ? "pairs" : "strings");
        tok_free(t);
    }
}

static void test_ignore_merges(void) {
    tokenizer *t, *u;
    s2d_err err;
    bool ok = load_json(tiny_json(false, true), "ignore_true", &t, &err) && load_json(tiny_json(false, false), "ignore_false", &u, &err);
    EXPECT(ok, "load: %s", err.msg);
    if (!ok) return;
    /* HF: with ignore_merges "xyz" is the vocabulary token 260; without, BPE gives xy + z. A longer word is
     * not in the vocabulary, so BPE runs either way. */
    EXPECT(encodes_to(t, "xyz", (const int32_t[]){260}, 1), "ignore_merges: whole word");
    EXPECT(encodes_to(u, "xyz", (const int32_t[]){261, 122}, 2), "no ignore_merges: BPE");
    EXPECT(encodes_to(t, "xyzxyz", (const int32_t[]){261, 122, 261, 122}, 4), "ignore_merges: BPE when absent");
    tok_free(t);
    tok_free(u);
}

static void test_added_tokens_flags(void) {
    cJSON *j = tiny_json(false, false);
    /* Ids in the file are placeholders: HF assigns 262, 263, ... after the 262-entry vocabulary. */
    add_added(j, "<s>", 900, true, false, false);
    add_added(j, "</s>", 901, false, true, false);
    add_added(j, "ww", 902, false, false, true);
    add_added(j, "<ab>", 903, false, false, false);
    add_added(j, "<ab>c", 904, false, false, false);
    add_added(j, "abc", 905, false, false, false); /* already a model token: keeps id 258 */
    tokenizer *t;
    s2d_err err;
    bool ok = load_json(j, "added", &t, &err);
    EXPECT(ok, "load: %s", err.msg);
    if (!ok) return;
    /* Expected ids from HF tokenizers on the same file. */
    EXPECT(encodes_to(t, "a  <s>b", (const int32_t[]){97, 262, 98}, 3), "lstrip");
    EXPECT(encodes_to(t, "a</s>  b", (const int32_t[]){97, 263, 98}, 3), "rstrip");
    EXPECT(encodes_to(t, "a \xE3\x80\x80<s>b", (const int32_t[]){97, 262, 98}, 3), "lstrip over U+3000");
    EXPECT(encodes_to(t, "a<s>  </s> b", (const int32_t[]){97, 262, 32, 32, 263, 98}, 6), "lstrip stops at the previous token");
    EXPECT(encodes_to(t, "x ww y", (const int32_t[]){120, 32, 264, 32, 121}, 5), "single_word between spaces");
    EXPECT(encodes_to(t, "xww y", (const int32_t[]){120, 119, 119, 32, 121}, 5), "single_word after a letter");
    EXPECT(encodes_to(t, "\xC3\xA9ww", (const int32_t[]){195, 169, 119, 119}, 4), "single_word after a non-ASCII letter");
    EXPECT(encodes_to(t, "_ww", (const int32_t[]){95, 119, 119}, 3), "single_word after _");
    EXPECT(encodes_to(t, "1ww.", (const int32_t[]){49, 119, 119, 46}, 4), "single_word after a digit");
    EXPECT(encodes_to(t, "(ww)", (const int32_t[]){40, 264, 41}, 3), "single_word between punctuation");
    EXPECT(encodes_to(t, "z<ab>cd", (const int32_t[]){122, 266, 100}, 3), "longest added token wins");
    EXPECT(encodes_to(t, "z<ab>d", (const int32_t[]){122, 265, 100}, 3), "shorter added token");
    EXPECT(encodes_to(t, "zabcd", (const int32_t[]){122, 258, 100}, 3), "added token with a model id");
    EXPECT(tok_vocab_size(t) == 267, "vocab size %d", tok_vocab_size(t));
    tok_free(t);
}

static void test_decode_lossy(void) {
    tokenizer *t;
    s2d_err err;
    bool ok = load_json(tiny_json(false, false), "lossy", &t, &err);
    EXPECT(ok, "load: %s", err.msg);
    if (!ok) return;
    /* In this vocabulary id == byte. Expected: Python bytes.decode('utf-8', 'replace'), which HF's decode
     * (String::from_utf8_lossy) matched on every case. */
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"\xE2\x82" "A", "\xEF\xBF\xBD" "A"},
        {"\xFF", "\xEF\xBF\xBD"},
        {"\xF0\x9F\x99", "\xEF\xBF\xBD"},
        {"\xED\xA0\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},
        {"\xC0\x80", "\xEF\xBF\xBD\xEF\xBF\xBD"},
        {"\xE2\x82\xAC", "\xE2\x82\xAC"},
        {"\xF4\x90\x80\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},
        {"a\x80\x80" "b", "a\xEF\xBF\xBD\xEF\xBF\xBD" "b"},
    };
    tok_bytes dec = {0};
    for (size_t c = 0; c < S2D_ARRAY_LEN(cases); c++) {
        int32_t ids[8];
        size_t n = strlen(cases[c].in);
        for (size_t i = 0; i < n; i++) ids[i] = (unsigned char)cases[c].in[i];
        bool d = tok_decode(t, ids, n, &dec, &err);
        EXPECT(d && dec.n == strlen(cases[c].out) && memcmp(dec.bytes, cases[c].out, dec.n) == 0, "lossy case %zu", c);
    }
    /* Merged tokens decode to their bytes: 258 is "abc". */
    int32_t abc[] = {258, 0};
    EXPECT(tok_decode(t, abc, 2, &dec, &err) && dec.n == 4 && memcmp(dec.bytes, "abc\0", 4) == 0, "abc + NUL");
    tok_bytes_free(&dec);
    tok_free(t);
}


static cJSON *set_path(cJSON *root, const char *obj, const char *key, cJSON *value);

/* Features the two real files do not use, checked against HF tokenizers on the same tiny files. */
static void test_other_pipeline_features(void) {
    tokenizer *t;
    s2d_err err;
    /* ByteLevel with its own GPT-2 regex and add_prefix_space. */
    bool ok = load_json(set_path(tiny_json(false, false), NULL, "pre_tokenizer",
                                 cJSON_Parse("{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"use_regex\":true}")),
                        "bl_regex", &t, &err);
    EXPECT(ok, "load: %s", err.msg);
    if (ok) {
        EXPECT(encodes_to(t, "hello world's  x",
                          (const int32_t[]){32, 104, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100, 39, 115, 32, 32, 120}, 17),
               "ByteLevel use_regex + add_prefix_space");
        EXPECT(encodes_to(t, "abcd\n\n  xyz", (const int32_t[]){32, 258, 100, 10, 10, 32, 32, 261, 122}, 9),
               "ByteLevel regex: whitespace before a word");
        tok_free(t);
    }
    /* Split on a literal String pattern. */
    ok = load_json(set_path(tiny_json(false, false), NULL, "pre_tokenizer",
                            cJSON_Parse("{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},"
                                        "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
                                        "\"use_regex\":false}]}")),
                   "split_string", &t, &err);
    EXPECT(ok, "load: %s", err.msg);
    if (ok) {
        EXPECT(encodes_to(t, "ab-c--cd-", (const int32_t[]){256, 45, 99, 45, 45, 259, 45}, 7), "Split on a String");
        tok_free(t);
    }
    /* NFC normalizer with a normalized=true added token, matched after normalisation. */
    cJSON *j = set_path(tiny_json(false, false), NULL, "normalizer", cJSON_Parse("{\"type\":\"NFC\"}"));
    add_added_full(j, "\xE1\xB8\x89", 900, false, false, false, true, false); /* U+1E09 */
    ok = load_json(j, "nfc_added", &t, &err);
    EXPECT(ok, "load: %s", err.msg);
    if (ok) {
        EXPECT(encodes_to(t, "c\xCC\xA7\xCC\x81x", (const int32_t[]){262, 120}, 2), "normalized added token (decomposed)");
        EXPECT(encodes_to(t, "c\xCC\x81\xCC\xA7", (const int32_t[]){262}, 1), "normalized added token (reordered marks)");
        EXPECT(encodes_to(t, "ab\xE1\xB8\x89", (const int32_t[]){256, 262}, 2), "normalized added token (composed)");
        tok_free(t);
    }
}

/* ---------------------------------------------------------------------------------------------------- */
/* Unsupported features: each a load error naming tokenizer.json, the JSON path and the reason. */

static cJSON *set_path(cJSON *root, const char *obj, const char *key, cJSON *value) {
    cJSON *o = obj ? cJSON_GetObjectItem(root, obj) : root;
    cJSON_DeleteItemFromObject(o, key);
    cJSON_AddItemToObject(o, key, value);
    return root;
}

static cJSON *split_pre(const char *behavior, bool invert, const char *second_type) {
    cJSON *seq = cJSON_CreateObject();
    cJSON_AddStringToObject(seq, "type", "Sequence");
    cJSON *list = cJSON_AddArrayToObject(seq, "pretokenizers");
    cJSON *split = cJSON_CreateObject();
    cJSON_AddStringToObject(split, "type", "Split");
    cJSON_AddItemToObject(split, "pattern", cJSON_Parse("{\"Regex\": \"\\\\s+\"}"));
    cJSON_AddStringToObject(split, "behavior", behavior);
    cJSON_AddBoolToObject(split, "invert", invert);
    cJSON_AddItemToArray(list, split);
    cJSON *bl = cJSON_CreateObject();
    cJSON_AddStringToObject(bl, "type", second_type);
    cJSON_AddFalseToObject(bl, "add_prefix_space");
    cJSON_AddFalseToObject(bl, "use_regex");
    cJSON_AddItemToArray(list, bl);
    return seq;
}

static void expect_load_error(cJSON *json, const char *sub, const char *jpath, const char *reason) {
    tokenizer *t;
    s2d_err err = {{0}};
    bool ok = load_json(json, sub, &t, &err);
    EXPECT(!ok, "%s: loaded, expected an error", sub);
    if (ok) {
        tok_free(t);
        return;
    }
    EXPECT(strstr(err.msg, "tokenizer.json") && strstr(err.msg, jpath) && strstr(err.msg, reason),
           "%s: message \"%s\" should name tokenizer.json, %s and \"%s\"", sub, err.msg, jpath, reason);
}

static void test_unsupported_features(void) {
    expect_load_error(set_path(tiny_json(false, false), "model", "type", cJSON_CreateString("WordPiece")), "wordpiece",
                      "model.type", "\"WordPiece\" is not supported");
    expect_load_error(set_path(tiny_json(false, false), "model", "type", cJSON_CreateString("Unigram")), "unigram",
                      "model.type", "\"Unigram\" is not supported");
    expect_load_error(set_path(tiny_json(false, false), "model", "type", cJSON_CreateString("WordLevel")), "wordlevel",
                      "model.type", "\"WordLevel\" is not supported");
    expect_load_error(set_path(tiny_json(false, false), "model", "byte_fallback", cJSON_CreateTrue()), "byte_fallback",
                      "model.byte_fallback", "not supported");
    expect_load_error(set_path(tiny_json(false, false), "model", "dropout", cJSON_CreateNumber(0.1)), "dropout",
                      "model.dropout", "not supported");
    expect_load_error(set_path(tiny_json(false, false), "model", "continuing_subword_prefix", cJSON_CreateString("##")),
                      "prefix", "model.continuing_subword_prefix", "not supported");
    expect_load_error(set_path(tiny_json(false, false), NULL, "normalizer", cJSON_Parse("{\"type\": \"NFKC\"}")), "nfkc",
                      "normalizer.type", "\"NFKC\" is not supported");
    expect_load_error(set_path(tiny_json(false, false), NULL, "normalizer", cJSON_Parse("{\"type\": \"Sequence\", \"normalizers\": []}")),
                      "norm_seq", "normalizer.type", "\"Sequence\" is not supported");
    expect_load_error(set_path(tiny_json(false, false), NULL, "pre_tokenizer", cJSON_Parse("{\"type\": \"Metaspace\"}")),
                      "metaspace", "pre_tokenizer.type", "\"Metaspace\" is not supported");
    expect_load_error(set_path(tiny_json(false, false), NULL, "pre_tokenizer", cJSON_CreateNull()), "no_pre",
                      "pre_tokenizer", "ByteLevel pre-tokenizer is required");
    expect_load_error(set_path(tiny_json(false, false), NULL, "pre_tokenizer", split_pre("Removed", false, "ByteLevel")),
                      "split_removed", "pre_tokenizer.pretokenizers[0].behavior", "\"Removed\" is not supported");
    expect_load_error(set_path(tiny_json(false, false), NULL, "pre_tokenizer", split_pre("Isolated", true, "ByteLevel")),
                      "split_invert", "pre_tokenizer.pretokenizers[0].invert", "not supported");
    expect_load_error(set_path(tiny_json(false, false), NULL, "pre_tokenizer", split_pre("Isolated", false, "Digits")),
                      "digits", "pre_tokenizer.pretokenizers[1].type", "\"Digits\" is not supported");
    expect_load_error(set_path(tiny_json(false, false), NULL, "decoder", cJSON_Parse("{\"type\": \"WordPiece\"}")),
                      "decoder", "decoder.type", "\"WordPiece\" is not supported");
    expect_load_error(set_path(tiny_json(false, false), NULL, "truncation", cJSON_Parse("{\"max_length\": 8}")),
                      "truncation", "truncation", "not supported");
    cJSON *j = tiny_json(false, false);
    cJSON_ReplaceItemInArray(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "model"), "merges"), 2, cJSON_CreateString("a b c"));
    expect_load_error(j, "bad_merge", "model.merges[2]", "two tokens separated by one space");
    j = tiny_json(true, false);
    cJSON_ReplaceItemInArray(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "model"), "merges"), 1, cJSON_Parse("[\"q\", \"zz\"]"));
    expect_load_error(j, "merge_oov", "model.merges[1]", "\"zz\" is not in model.vocab");
    j = tiny_json(false, false);
    cJSON_DeleteItemFromObject(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "model"), "vocab"), "\xC4\xA0");
    expect_load_error(j, "no_space_byte", "model.vocab", "byte 0x20");
    /* Not JSON at all: the line is named. */
    char dir[4200], path[4300];
    snprintf(dir, sizeof dir, "%s/badjson", g_tmp);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *fp = fopen(path, "w");
    fputs("{\n\"model\": {\n  \"vocab\": [1, 2,,]\n}}\n", fp);
    fclose(fp);
    tokenizer *t;
    s2d_err err;
    EXPECT(!tok_load(dir, &t, &err) && strstr(err.msg, "tokenizer.json:3: invalid JSON"), "bad JSON: %s", err.msg);
    snprintf(dir, sizeof dir, "%s/missing", g_tmp);
    EXPECT(!tok_load(dir, &t, &err) && strstr(err.msg, "missing"), "missing dir: %s", err.msg);
}

/* Concurrent encodes (one holds the cache, the others run without it) give the same ids. */
static void test_concurrent_encode(void) {
    tokenizer *t = load_real("qwen3");
    if (!t) return;
    const char *texts[] = {"The answer is \\boxed{\\frac{3}{4}}.", "<|im_start|>user\nFind x.<|im_end|>",
                           "Unicode: caf\xC3\xA9 \xE6\x95\xB0\xE5\xAD\xA6 \xF0\x9F\x99\x82", "   spaces\t\ttabs\n\n"};
    tok_ids want[4] = {{0}};
    s2d_err err;
    for (int i = 0; i < 4; i++) tok_encode(t, texts[i], strlen(texts[i]), &want[i], &err);
    int bad = 0;
#pragma omp parallel for reduction(+ : bad) num_threads(4)
    for (int k = 0; k < 400; k++) {
        tok_ids got = {0};
        s2d_err e;
        const char *s = texts[k % 4];
        tok_encode(t, s, strlen(s), &got, &e);
        bad += got.n != want[k % 4].n || memcmp(got.ids, want[k % 4].ids, sizeof(int32_t) * got.n) != 0;
        tok_ids_free(&got);
    }
    EXPECT(bad == 0, "%d concurrent encodes differed", bad);
    for (int i = 0; i < 4; i++) tok_ids_free(&want[i]);
    tok_free(t);
}

static void rm_tree(const char *dir) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0, "cannot remove %s", dir);
}

int main(void) {
    const char *root = getenv("S2D_ROOT");
    snprintf(g_root, sizeof g_root, "%s", root ? root : ".");
    const char *tmp = getenv("S2D_TMP");
    snprintf(g_tmp, sizeof g_tmp, "%s/s2d-test-tokenizer.XXXXXX", tmp ? tmp : "/tmp");
    CHECK(mkdtemp(g_tmp), "mkdtemp %s failed", g_tmp);
    RUN_TEST(test_reference_qwen3);
    RUN_TEST(test_reference_llama3_1);
    RUN_TEST(test_lookups);
    RUN_TEST(test_fast_path_qwen3);
    RUN_TEST(test_fast_path_llama3_1);
    RUN_TEST(test_merges_spellings);
    RUN_TEST(test_ignore_merges);
    RUN_TEST(test_added_tokens_flags);
    RUN_TEST(test_decode_lossy);
    RUN_TEST(test_other_pipeline_features);
    RUN_TEST(test_unsupported_features);
    RUN_TEST(test_concurrent_encode);
    rm_tree(g_tmp);
    return TEST_SUMMARY();
}
