#include "core/json.h"

const char *json_kind(const cJSON *j) {
    if (!j) return "missing";
    if (cJSON_IsNull(j)) return "null";
    if (cJSON_IsBool(j)) return "a boolean";
    if (cJSON_IsNumber(j)) return "a number";
    if (cJSON_IsString(j)) return "a string";
    if (cJSON_IsArray(j)) return "an array";
    if (cJSON_IsObject(j)) return "an object";
    return "something else";
}

void json_put_string(void (*put)(void *ctx, const char *s, size_t n), void *ctx, const char *s, size_t len) {
    static const char hex[] = "0123456789abcdef";
    put(ctx, "\"", 1);
    size_t run = 0; /* bytes that pass through, written in one call */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (c >= 0x20) {
                run++;
                continue;
            }
        }
        if (run) put(ctx, s + i - run, run), run = 0;
        if (esc) put(ctx, esc, 2);
        else put(ctx, u, sizeof u);
    }
    if (run) put(ctx, s + len - run, run);
    put(ctx, "\"", 1);
}

static void put_file(void *ctx, const char *s, size_t n) { fwrite(s, 1, n, (FILE *)ctx); }

void print_json_string(FILE *out, const char *s, size_t len) { json_put_string(put_file, out, s, len); }
