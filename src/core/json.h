/* json.h: small JSON helpers shared by the readers (error messages) and the writers (string literals). */
#pragma once
#include <stddef.h>
#include <stdio.h>

#include <cjson/cJSON.h>

/* What a JSON value is, for error messages: "a number", "an object", "null", ... ("missing" for NULL). */
const char *json_kind(const cJSON *j);

/* Writes s[0, len) as a JSON string literal through put, with serde_json's escapes (\" \\ \b \f \n \r \t, other
 * control characters as \u00xx); UTF-8 passes through unchanged. */
void json_put_string(void (*put)(void *ctx, const char *s, size_t n), void *ctx, const char *s, size_t len);
/* The same onto a stdio stream. */
void print_json_string(FILE *out, const char *s, size_t len);
