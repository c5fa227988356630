/* tokenizer_internal.h: the tokenizer's state, shared by tokenizer.c (loading, lookups, decoding) and
 * tokenizer_encode.c (added-token splitting, normalisation, pre-tokenisation, BPE). Not a public API. */
#pragma once
#include <oniguruma.h>
#include <pthread.h>

#include "text/tokenizer.h"

enum { TOK_MAX_LEVELS = 4 };

/* An added token (tokenizer.json "added_tokens"). */
typedef struct {
    const char *content; /* into tokenizer.added_str */
    uint32_t len;
    int32_t id;
    bool lstrip, rstrip, single_word, normalized, special;
} tok_added;

/* One pre-tokenisation level: a regex split (behaviour Isolated), optionally preceded by ByteLevel's
 * add_prefix_space. re == NULL means no split at this level. */
typedef struct {
    regex_t *re;
    int fast_digits;      /* > 0: the hand matcher for the Qwen2/Llama 3 pattern with \p{N}{1,fast_digits} */
    bool add_prefix_space; /* ByteLevel add_prefix_space, applied before this level's split */
} tok_level;

/* Open-addressing hash slots. */
typedef struct {
    uint32_t hash;
    int32_t id; /* -1: empty */
} tok_str_slot;
typedef struct {
    uint64_t key; /* (left_id << 32) | right_id; UINT64_MAX: empty */
    uint32_t rank;
    int32_t new_id;
} tok_merge_slot;

/* Pre-token (raw bytes) -> ids cache, reset when full. Guarded by lock (try-lock per encode call). */
typedef struct {
    uint64_t hash;
    uint32_t key_off, ids_off;
    uint16_t key_len, n_ids; /* key_len == 0: empty slot */
} tok_cache_slot;
typedef struct {
    pthread_mutex_t lock;
    tok_cache_slot *slots; /* [mask + 1] */
    uint32_t mask, count, max_count;
    unsigned char *keys; /* [key_cap] */
    int32_t *ids;        /* [ids_cap] */
    size_t key_used, key_cap, ids_used, ids_cap;
} tok_cache;

struct tokenizer {
    char path[4096];
    int vocab_size;      /* one past the largest id */
    int32_t model_count; /* entries in model.vocab (HF's BPE get_vocab_size) */
    int32_t id_capacity; /* size of the id-indexed model tables (>= vocab_size) */
    /* Model vocabulary: token strings as written in tokenizer.json (byte-level form), concatenated. */
    char *model_str;
    uint32_t *model_off; /* [vocab_size + 1]; model_len[id] == 0: no model token with that id */
    uint32_t *model_len; /* [vocab_size] */
    tok_str_slot *vocab_map;
    uint32_t vocab_mask;
    tok_merge_slot *merge_map;
    uint32_t merge_mask;
    int32_t byte_id[256]; /* id of the single byte-level character for each byte */
    bool ignore_merges;
    /* Added tokens */
    tok_added *added;
    int n_added, n_added_normalized;
    char *added_str;
    int32_t *added_of_id; /* [vocab_size]: index into added or -1 */
    /* Candidates by first byte for each pass (0: normalized=false on raw text, 1: normalized=true):
     * added indices sorted longest first, in added_cand[pass][cand_start[pass][b] .. cand_start[pass][b+1]). */
    int32_t *added_cand[2];
    int32_t cand_start[2][257];
    /* Decoded bytes of every id (ByteLevel decoder per token; added tokens give their content). */
    char *dec_str;
    uint32_t *dec_off; /* [vocab_size + 1] */
    bool *has_token;   /* [vocab_size] */
    /* Normalizer: 0 none, 1 NFC */
    int normalizer;
    tok_level levels[TOK_MAX_LEVELS];
    int n_levels;
    tok_cache *cache;
};

uint64_t tok_hash_bytes(const void *p, size_t n);
/* Slot of a merge pair key ((left << 32) | right) in a table of mask + 1 slots. */
static inline uint32_t tok_merge_index(uint64_t key, uint32_t mask) {
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(h >> 40) & mask;
}
/* Id of a model-vocabulary token given in byte-level form, or -1. */
int32_t tok_vocab_lookup(const tokenizer *t, const char *s, size_t n);
/* GPT-2 bytes_to_unicode as UTF-8: byte b maps to tok_byte_char[b] (tok_byte_char_len[b] bytes). */
extern char tok_byte_char[256][2];
extern uint8_t tok_byte_char_len[256];
void tok_byte_level_init(void);
/* Index of the first byte that is not part of valid UTF-8 (Rust str rules), or len when all valid. */
size_t tok_utf8_valid_prefix(const unsigned char *s, size_t len);
