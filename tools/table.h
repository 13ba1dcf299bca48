/*
 * Output for the command-line tools: a table of cells printed either as
 * aligned text columns (for people) or as JSON (for scripts). Cells are typed
 * (string, integer, float) so JSON gets real numbers while text output stays
 * aligned. A "kv" table has two columns and prints as one JSON object.
 *
 * Ownership: tbl_new allocates, tbl_free releases; cell strings are copied.
 * Allocation failure is remembered and reported by tbl_print (-ENOMEM).
 */
#ifndef RMQ_TOOLS_TABLE_H
#define RMQ_TOOLS_TABLE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

typedef struct tbl tbl;

/* ncols column headers (copied). */
tbl *tbl_new(int ncols, const char *const *headers);
/* Two-column name/value table; JSON output is one object. */
tbl *tbl_new_kv(void);
void tbl_free(tbl *t);

/* Cells are added left to right; a row ends after ncols cells. */
void tbl_str(tbl *t, const char *s);
void tbl_strf(tbl *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tbl_int(tbl *t, int64_t v);
void tbl_dbl(tbl *t, double v, int decimals);
/* kv tables: one row. */
void tbl_kv(tbl *t, const char *name, const char *val);
void tbl_kv_int(tbl *t, const char *name, int64_t v);

int tbl_rows(const tbl *t);
/* Text: headers then aligned rows; JSON: array of objects (kv: object). */
int tbl_print(const tbl *t, bool json, FILE *out);
/* The table as a new JSON value (array or object), for callers combining
 * several tables into one document. NULL on ENOMEM. */
json_t *tbl_json(const tbl *t);

#endif
