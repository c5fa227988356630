/* tokenizer_encode.c: text -> ids, step for step like Hugging Face tokenizers: added-token split, NFC,
 * regex pre-tokenisation (Oniguruma, with a hand matcher for the Qwen/Llama 3 pattern), byte-level BPE. */
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "text/tokenizer_internal.h"

enum { CACHE_MAX_KEY = 64 }; /* longer pre-tokens are rare; they bypass the cache */

static inline const tok_merge_slot *merge_find(const tokenizer *t, int32_t a, int32_t b) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t i = tok_merge_index(key, t->merge_mask);
    for (;;) {
        const tok_merge_slot *s = &t->merge_map[i];
        if (s->key == key) return s;
        if (s->key == UINT64_MAX) return NULL;
        i = (i + 1) & t->merge_mask;
    }
}

/* ---------------------------------------------------------------------------------------------------- */
/* Encode state: one per tok_encode call; buffers grow to the largest pre-token and are reused. */

typedef struct {
    int32_t id;
    int32_t prev, next; /* -1: none */
    int32_t alive;      /* 0 once merged into its left neighbour */
} bpe_sym;

typedef struct {
    uint32_t rank, pos;
    int32_t new_id;
} bpe_merge;

typedef struct {
    const tokenizer *t;
    tok_ids *out;
    tok_cache *cache; /* NULL when another thread holds it */
    bpe_sym *syms;
    bpe_merge *heap;
    size_t syms_cap, heap_cap, heap_n;
    char *mapped;
    size_t mapped_cap;
} enc_state;

static inline void push_id(tok_ids *v, int32_t id) {
    if (v->n == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 256;
        v->ids = xrealloc(v->ids, sizeof(int32_t) * v->cap);
    }
    v->ids[v->n++] = id;
}

/* Min-heap on (rank, pos), the order of HF's BinaryHeap<Merge>. */
static inline bool merge_less(const bpe_merge *a, const bpe_merge *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}
static void heap_push(enc_state *st, bpe_merge m) {
    if (st->heap_n == st->heap_cap) {
        st->heap_cap = st->heap_cap ? 2 * st->heap_cap : 64;
        st->heap = xrealloc(st->heap, sizeof(bpe_merge) * st->heap_cap);
    }
    size_t i = st->heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!merge_less(&m, &st->heap[parent])) break;
        st->heap[i] = st->heap[parent];
        i = parent;
    }
    st->heap[i] = m;
}
static bpe_merge heap_pop(enc_state *st) {
    bpe_merge top = st->heap[0], last = st->heap[--st->heap_n];
    size_t i = 0, n = st->heap_n;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && merge_less(&st->heap[child + 1], &st->heap[child])) child++;
        if (!merge_less(&st->heap[child], &last)) break;
        st->heap[i] = st->heap[child];
        i = child;
    }
    if (n > 0) st->heap[i] = last;
    return top;
}

static void maybe_push_pair(enc_state *st, uint32_t pos) {
    const bpe_sym *s = &st->syms[pos];
    if (s->next < 0) return;
    const tok_merge_slot *m = merge_find(st->t, s->id, st->syms[s->next].id);
    if (m) heap_push(st, (bpe_merge){m->rank, pos, m->new_id});
}

/* BPE of one pre-token (raw bytes) appended to st->out: HF's Word::merge_all, stale-entry checks included. */
static void bpe_word(enc_state *st, const unsigned char *s, size_t n) {
    const tokenizer *t = st->t;
    if (t->ignore_merges) { /* Llama 3: a pre-token that is itself a token is emitted whole */
        if (st->mapped_cap < 2 * n) {
            st->mapped_cap = 2 * n;
            st->mapped = xrealloc(st->mapped, st->mapped_cap);
        }
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            memcpy(st->mapped + k, tok_byte_char[s[i]], tok_byte_char_len[s[i]]);
            k += tok_byte_char_len[s[i]];
        }
        int32_t id = tok_vocab_lookup(t, st->mapped, k);
        if (id >= 0) {
            push_id(st->out, id);
            return;
        }
    }
    if (st->syms_cap < n) {
        st->syms_cap = n;
        st->syms = xrealloc(st->syms, sizeof(bpe_sym) * n);
    }
    bpe_sym *sy = st->syms;
    for (size_t i = 0; i < n; i++)
        sy[i] = (bpe_sym){t->byte_id[s[i]], (int32_t)i - 1, i + 1 < n ? (int32_t)i + 1 : -1, 1};
    st->heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++) maybe_push_pair(st, (uint32_t)i);
    while (st->heap_n > 0) {
        bpe_merge top = heap_pop(st);
        bpe_sym *left = &sy[top.pos];
        if (!left->alive || left->next < 0) continue;
        int32_t right_pos = left->next;
        const tok_merge_slot *m = merge_find(t, left->id, sy[right_pos].id);
        if (!m || m->new_id != top.new_id) continue; /* expired entry */
        left->id = top.new_id;
        sy[right_pos].alive = 0;
        left->next = sy[right_pos].next;
        if (left->next >= 0) sy[left->next].prev = (int32_t)top.pos;
        if (left->prev >= 0) maybe_push_pair(st, (uint32_t)left->prev);
        maybe_push_pair(st, top.pos);
    }
    for (int32_t i = 0; i >= 0; i = sy[i].next) push_id(st->out, sy[i].id);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Pre-token cache */

static void cache_reset(tok_cache *c) {
    memset(c->slots, 0, sizeof(tok_cache_slot) * ((size_t)c->mask + 1));
    c->count = 0;
    c->key_used = c->ids_used = 0;
}

static void encode_piece(const char *piece, size_t n, void *ctx) {
    enc_state *st = ctx;
    const unsigned char *s = (const unsigned char *)piece;
    if (n == 1) {
        push_id(st->out, st->t->byte_id[s[0]]);
        return;
    }
    tok_cache *c = st->cache;
    if (!c || n > CACHE_MAX_KEY) {
        bpe_word(st, s, n);
        return;
    }
    uint64_t h = tok_hash_bytes(s, n);
    uint32_t i = (uint32_t)h & c->mask;
    for (;;) {
        const tok_cache_slot *slot = &c->slots[i];
        if (slot->key_len == 0) break;
        if (slot->hash == h && slot->key_len == n && memcmp(c->keys + slot->key_off, s, n) == 0) {
            tok_ids *v = st->out;
            if (v->n + slot->n_ids > v->cap) {
                while (v->n + slot->n_ids > v->cap) v->cap = v->cap ? 2 * v->cap : 256;
                v->ids = xrealloc(v->ids, sizeof(int32_t) * v->cap);
            }
            memcpy(v->ids + v->n, c->ids + slot->ids_off, sizeof(int32_t) * slot->n_ids);
            v->n += slot->n_ids;
            return;
        }
        i = (i + 1) & c->mask;
    }
    size_t start = st->out->n;
    bpe_word(st, s, n);
    size_t m = st->out->n - start;
    if (c->count >= c->max_count || c->key_used + n > c->key_cap || c->ids_used + m > c->ids_cap) {
        cache_reset(c);
        i = (uint32_t)h & c->mask;
    }
    tok_cache_slot *slot = &c->slots[i];
    slot->hash = h;
    slot->key_len = (uint16_t)n;
    slot->n_ids = (uint16_t)m;
    slot->key_off = (uint32_t)c->key_used;
    slot->ids_off = (uint32_t)c->ids_used;
    memcpy(c->keys + c->key_used, s, n);
    memcpy(c->ids + c->ids_used, st->out->ids + start, sizeof(int32_t) * m);
    c->key_used += n;
    c->ids_used += m;
    c->count++;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Pre-tokenisation */

typedef void (*piece_fn)(const char *piece, size_t len, void *ctx);

typedef struct {
    const tokenizer *t;
    OnigRegion *region;
    bool fast;
    piece_fn fn;
    void *ctx;
    long count;
    int onig_error; /* a failed search (e.g. its retry limit on a pathological regex): stops the text */
} pre_ctx;

/* ASCII classes for the hand matcher: letters, digits, whitespace (\t \n \v \f \r and space, Unicode
 * White_Space within ASCII), and other. Non-ASCII bytes make the matcher defer to Oniguruma. */
enum { C_OTHER = 0, C_LETTER = 1, C_DIGIT = 2, C_SPACE = 3, C_NONASCII = 4 };
static uint8_t g_class[256];
static pthread_once_t g_class_once = PTHREAD_ONCE_INIT;
static void class_build(void) {
    for (int c = 0; c < 256; c++) {
        uint8_t k = C_OTHER;
        if (c >= 0x80) k = C_NONASCII;
        else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) k = C_LETTER;
        else if (c >= '0' && c <= '9') k = C_DIGIT;
        else if (c == ' ' || (c >= 0x09 && c <= 0x0D)) k = C_SPACE;
        g_class[c] = k;
    }
}

/* Length of the match of the Qwen/Llama 3 Split regex at s[p] (which always matches at p: every character
 * starts some alternative), with \p{N}{1,max_digits}; or -1 when the answer depends on a non-ASCII
 * character, where the caller asks Oniguruma. Alternatives in order:
 *   A1 (?i:'s|'t|'re|'ve|'m|'ll|'d)  A2 [^\r\n\p{L}\p{N}]?\p{L}+  A3 \p{N}{1,k}
 *   A4  ?[^\s\p{L}\p{N}]+[\r\n]*      A5 \s*[\r\n]+  A6 \s+(?!\S)  A7 \s+ */
static long fast_match(const unsigned char *s, size_t n, size_t p, int max_digits) {
    const uint8_t *cl = g_class;
    unsigned char c0 = s[p];
    int k0 = cl[c0];
    if (k0 == C_NONASCII) return -1;
    if (c0 == '\'' && p + 1 < n) { /* A1, ASCII case-insensitively (non-ASCII: 'ſ' folds to 's') */
        unsigned char c1 = s[p + 1];
        if (c1 >= 0x80) return -1;
        c1 |= 0x20;
        if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
        if ((c1 == 'r' || c1 == 'v' || c1 == 'l') && p + 2 < n) {
            unsigned char c2 = s[p + 2];
            if (c2 >= 0x80) return -1;
            c2 |= 0x20;
            if (c2 == (c1 == 'l' ? 'l' : 'e')) return 3;
        }
    }
    size_t q;
    if (k0 == C_LETTER) { /* A2 without the optional prefix */
        q = p + 1;
        while (q < n && cl[s[q]] == C_LETTER) q++;
        return q < n && cl[s[q]] == C_NONASCII ? -1 : (long)(q - p);
    }
    if (k0 != C_DIGIT && c0 != '\r' && c0 != '\n' && p + 1 < n) { /* A2 with the one-character prefix */
        int k1 = cl[s[p + 1]];
        if (k1 == C_NONASCII) return -1;
        if (k1 == C_LETTER) {
            q = p + 2;
            while (q < n && cl[s[q]] == C_LETTER) q++;
            return q < n && cl[s[q]] == C_NONASCII ? -1 : (long)(q - p);
        }
    }
    if (k0 == C_DIGIT) { /* A3 */
        q = p + 1;
        while (q < n && (long)(q - p) < max_digits && cl[s[q]] == C_DIGIT) q++;
        if ((long)(q - p) < max_digits && q < n && cl[s[q]] == C_NONASCII) return -1;
        return (long)(q - p);
    }
    if (k0 == C_OTHER || (c0 == ' ' && p + 1 < n && cl[s[p + 1]] != C_SPACE)) { /* A4 */
        q = c0 == ' ' ? p + 1 : p;
        if (cl[s[q]] == C_NONASCII) return -1;
        if (cl[s[q]] == C_OTHER) {
            while (q < n && cl[s[q]] == C_OTHER) q++;
            if (q < n && cl[s[q]] == C_NONASCII) return -1;
            while (q < n && (s[q] == '\r' || s[q] == '\n')) q++;
            return (long)(q - p);
        }
    }
    /* c0 is whitespace: A5, A6, A7 over the maximal whitespace run */
    q = p;
    size_t last_newline = SIZE_MAX;
    while (q < n && cl[s[q]] == C_SPACE) {
        if (s[q] == '\r' || s[q] == '\n') last_newline = q;
        q++;
    }
    if (q < n && cl[s[q]] == C_NONASCII) return -1; /* the run may go on with Unicode whitespace */
    if (last_newline != SIZE_MAX) return (long)(last_newline + 1 - p);
    if (q == n || q - p == 1) return (long)(q - p);
    return (long)(q - p - 1);
}

static void split_level(pre_ctx *pc, int lvl, const unsigned char *s, size_t n);

static inline void emit(pre_ctx *pc, int lvl, const unsigned char *s, size_t n) {
    if (pc->onig_error) return;
    if (n == 0) return;
    if (lvl + 1 < pc->t->n_levels) {
        split_level(pc, lvl + 1, s, n);
    } else {
        pc->count++;
        pc->fn((const char *)s, n, pc->ctx);
    }
}

/* Advance past one UTF-8 character (input is valid UTF-8). */
static size_t utf8_next(const unsigned char *s, size_t n, size_t p) {
    p++;
    while (p < n && (s[p] & 0xC0) == 0x80) p++;
    return p;
}

static void split_level(pre_ctx *pc, int lvl, const unsigned char *s, size_t n) {
    const tok_level *lv = &pc->t->levels[lvl];
    unsigned char *prefixed = NULL;
    if (lv->add_prefix_space && s[0] != ' ') { /* ByteLevel add_prefix_space */
        prefixed = xmalloc(n + 1);
        prefixed[0] = ' ';
        memcpy(prefixed + 1, s, n);
        s = prefixed;
        n++;
    }
    if (!lv->re) {
        emit(pc, lvl, s, n);
        free(prefixed);
        return;
    }
    size_t prev = 0, pos = 0; /* prev: end of what was emitted; pos: where the next search starts */
    bool fast = pc->fast && lv->fast_digits > 0;
    while (pos < n) {
        if (fast && prev == pos) {
            long m = fast_match(s, n, pos, lv->fast_digits);
            if (m > 0) {
                emit(pc, lvl, s + pos, (size_t)m);
                pos = prev = pos + (size_t)m;
                continue;
            }
        }
        int r = onig_search(lv->re, s, s + n, s + pos, s + n, pc->region, ONIG_OPTION_NONE);
        if (r == ONIG_MISMATCH) break;
        if (r < 0) { /* an error of this text (the caller names its line), not of the program */
            pc->onig_error = r;
            free(prefixed);
            return;
        }
        size_t mb = (size_t)pc->region->beg[0], me = (size_t)pc->region->end[0];
        if (me == mb) { /* empty match: nothing to isolate; search on from the next character */
            pos = utf8_next(s, n, mb);
            continue;
        }
        emit(pc, lvl, s + prev, mb - prev); /* the text between matches is a piece of its own */
        emit(pc, lvl, s + mb, me - mb);
        pos = prev = me;
    }
    emit(pc, lvl, s + prev, n - prev);
    free(prefixed);
}

static void pretokenize(pre_ctx *pc, const unsigned char *s, size_t n) {
    if (n == 0) return;
    if (pc->t->n_levels == 0) {
        pc->count++;
        pc->fn((const char *)s, n, pc->ctx);
    } else {
        split_level(pc, 0, s, n);
    }
}

/* NFC (when the file asks for it) then pre-tokenisation. ASCII text is already NFC. */
static void normalize_and_pretokenize(pre_ctx *pc, const unsigned char *s, size_t n, void (*then)(pre_ctx *, const unsigned char *, size_t)) {
    if (pc->t->normalizer == 1 && n > 0) {
        bool ascii = true;
        for (size_t i = 0; i < n && ascii; i++) ascii = s[i] < 0x80;
        if (!ascii) {
            utf8proc_uint8_t *nfc = NULL;
            utf8proc_ssize_t m = utf8proc_map(s, (utf8proc_ssize_t)n, &nfc, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            CHECK(m >= 0, "NFC normalisation failed: %s", utf8proc_errmsg(m));
            then(pc, nfc, (size_t)m);
            free(nfc);
            return;
        }
    }
    then(pc, s, n);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Added tokens */

/* Unicode White_Space (Rust char::is_whitespace) of the character starting at s[i], or ending before s[i]
 * when backwards; *w gets its length. */
static bool is_white_space_cp(int32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}
static bool is_word_cp(int32_t cp) {
    if (cp == '_') return true;
    utf8proc_category_t cat = utf8proc_category(cp);
    return (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
           (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO);
}
static int32_t cp_at(const unsigned char *s, size_t n, size_t i, size_t *w) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t k = utf8proc_iterate(s + i, (utf8proc_ssize_t)(n - i), &cp);
    *w = k > 0 ? (size_t)k : 1;
    return k > 0 ? cp : -1;
}
static int32_t cp_before(const unsigned char *s, size_t i, size_t *w) {
    size_t j = i - 1;
    while (j > 0 && (s[j] & 0xC0) == 0x80) j--;
    return cp_at(s, i, j, w);
}

typedef void (*segment_fn)(pre_ctx *pc, const unsigned char *s, size_t n);

/* Splits s on the added tokens of one pass (leftmost, then longest, like HF's aho-corasick
 * LeftmostLongest): text between tokens goes to on_text, each token's id to out. */
static void split_added(pre_ctx *pc, int pass, const unsigned char *s, size_t n, tok_ids *out, segment_fn on_text) {
    const tokenizer *t = pc->t;
    const int32_t *start = t->cand_start[pass];
    size_t done = 0; /* end of the last token (HF's start_offset) */
    size_t p = 0;
    while (p < n) {
        int32_t b = s[p], ci = start[b], ce = start[b + 1];
        if (ci == ce) {
            p++;
            continue;
        }
        const tok_added *hit = NULL;
        for (; ci < ce; ci++) {
            const tok_added *a = &t->added[t->added_cand[pass][ci]];
            if (a->len <= n - p && memcmp(s + p, a->content, a->len) == 0) {
                hit = a;
                break;
            }
        }
        if (!hit) {
            p++;
            continue;
        }
        size_t mstart = p, mend = p + hit->len, w;
        if (hit->single_word) {
            bool word_before = mstart > 0 && is_word_cp(cp_before(s, mstart, &w));
            bool word_after = mend < n && is_word_cp(cp_at(s, n, mend, &w));
            if (word_before || word_after) { /* HF drops the match and goes on after it */
                p = mend;
                continue;
            }
        }
        if (hit->lstrip) {
            while (mstart > done) {
                int32_t cp = cp_before(s, mstart, &w);
                if (!is_white_space_cp(cp)) break;
                mstart -= w;
            }
        }
        if (hit->rstrip) {
            while (mend < n) {
                int32_t cp = cp_at(s, n, mend, &w);
                if (!is_white_space_cp(cp)) break;
                mend += w;
            }
        }
        if (mstart > done) on_text(pc, s + done, mstart - done);
        push_id(out, hit->id);
        done = p = mend;
    }
    if (done < n) on_text(pc, s + done, n - done);
}

static void segment_pass1(pre_ctx *pc, const unsigned char *s, size_t n) {
    enc_state *st = pc->ctx;
    split_added(pc, 1, s, n, st->out, pretokenize);
}

static void segment_pass0(pre_ctx *pc, const unsigned char *s, size_t n) {
    normalize_and_pretokenize(pc, s, n, pc->t->n_added_normalized > 0 ? segment_pass1 : pretokenize);
}

int tok_encode(const tokenizer *t, const char *text, size_t len, tok_ids *out, s2d_err *err) {
    const unsigned char *s = (const unsigned char *)text;
    size_t bad = tok_utf8_valid_prefix(s, len);
    if (bad != len) {
        err_set(err, "encode: the text is not valid UTF-8 (byte 0x%02X at offset %zu)", s[bad], bad);
        return -1;
    }
    pthread_once(&g_class_once, class_build);
    size_t before = out->n;
    enc_state st = {.t = t, .out = out};
    if (pthread_mutex_trylock(&t->cache->lock) == 0) st.cache = t->cache;
    pre_ctx pc = {.t = t, .region = onig_region_new(), .fast = true, .fn = encode_piece, .ctx = &st};
    CHECK(pc.region, "out of memory (onig_region_new)");
    split_added(&pc, 0, s, len, out, segment_pass0);
    onig_region_free(pc.region, 1);
    if (pc.onig_error) {
        OnigUChar msg[ONIG_MAX_ERROR_MESSAGE_LEN];
        onig_error_code_to_str(msg, pc.onig_error);
        err_set(err, "encode: the pre-tokenizer regex of %s failed on this text: %s (Oniguruma code %d)", t->path,
                (const char *)msg, pc.onig_error);
        out->n = before;
    }
    if (st.cache) pthread_mutex_unlock(&t->cache->lock);
    free(st.syms);
    free(st.heap);
    free(st.mapped);
    if (pc.onig_error) return -1;
    size_t added = out->n - before;
    CHECK(added <= (size_t)INT32_MAX, "encode: more than 2^31 ids from one text");
    return (int)added;
}

int tok_encode_buf(const tokenizer *t, const char *text, size_t len, int32_t *buf, int cap, s2d_err *err) {
    tok_ids v = {0};
    int n = tok_encode(t, text, len, &v, err);
    if (n >= 0 && n > cap) {
        err_set(err, "encode: the text needs %d ids, more than the buffer's %d", n, cap);
        n = -1;
    }
    if (n > 0) memcpy(buf, v.ids, sizeof(int32_t) * (size_t)n);
    tok_ids_free(&v);
    return n;
}

long tok_pretokenize(const tokenizer *t, const char *text, size_t len, bool use_fast_path,
                     void (*fn)(const char *piece, size_t piece_len, void *ctx), void *ctx, s2d_err *err) {
    const unsigned char *s = (const unsigned char *)text;
    size_t bad = tok_utf8_valid_prefix(s, len);
    if (bad != len) {
        err_set(err, "pretokenize: the text is not valid UTF-8 (offset %zu)", bad);
        return -1;
    }
    pthread_once(&g_class_once, class_build);
    pre_ctx pc = {.t = t, .region = onig_region_new(), .fast = use_fast_path, .fn = fn, .ctx = ctx};
    CHECK(pc.region, "out of memory (onig_region_new)");
    normalize_and_pretokenize(&pc, s, len, pretokenize);
    onig_region_free(pc.region, 1);
    return pc.count;
}

bool tok_has_fast_path(const tokenizer *t) {
    for (int i = 0; i < t->n_levels; i++)
        if (t->levels[i].fast_digits > 0) return true;
    return false;
}
