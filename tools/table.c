/*
 * Aligned text / JSON tables for the tools (see table.h). Cells are kept as
 * their text plus a type tag; widths are computed at print time.
 */
#include "table.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

enum cell_type { CELL_STR, CELL_INT, CELL_DBL };

struct cell {
    char *text;
    enum cell_type type;
    int64_t i;
    double d;
};

struct tbl {
    int ncols;
    bool kv;
    bool oom;
    char **headers;
    struct cell *cells;
    size_t ncells, cap;
};

tbl *tbl_new(int ncols, const char *const *headers)
{
    tbl *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->ncols = ncols;
    t->headers = calloc((size_t)ncols, sizeof *t->headers);
    if (!t->headers) {
        free(t);
        return NULL;
    }
    for (int i = 0; i < ncols; i++) {
        t->headers[i] = strdup(headers[i]);
        if (!t->headers[i])
            t->oom = true;
    }
    return t;
}

tbl *tbl_new_kv(void)
{
    static const char *const h[] = { "Name", "Value" };
    tbl *t = tbl_new(2, h);
    if (t)
        t->kv = true;
    return t;
}

void tbl_free(tbl *t)
{
    if (!t)
        return;
    for (int i = 0; i < t->ncols; i++)
        free(t->headers[i]);
    free(t->headers);
    for (size_t i = 0; i < t->ncells; i++)
        free(t->cells[i].text);
    free(t->cells);
    free(t);
}

static struct cell *add_cell(tbl *t, char *text)
{
    if (!text) {
        t->oom = true;
        return NULL;
    }
    if (t->ncells == t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 64;
        struct cell *n = realloc(t->cells, ncap * sizeof *n);
        if (!n) {
            free(text);
            t->oom = true;
            return NULL;
        }
        t->cells = n;
        t->cap = ncap;
    }
    struct cell *c = &t->cells[t->ncells++];
    c->text = text;
    c->type = CELL_STR;
    return c;
}

void tbl_str(tbl *t, const char *s)
{
    add_cell(t, strdup(s ? s : ""));
}

void tbl_strf(tbl *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    add_cell(t, s);
}

void tbl_int(tbl *t, int64_t v)
{
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%lld", (long long)v);
    struct cell *c = add_cell(t, strdup(tmp));
    if (c) {
        c->type = CELL_INT;
        c->i = v;
    }
}

void tbl_dbl(tbl *t, double v, int decimals)
{
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%.*f", decimals, v);
    struct cell *c = add_cell(t, strdup(tmp));
    if (c) {
        c->type = CELL_DBL;
        c->d = v;
    }
}

void tbl_kv(tbl *t, const char *name, const char *val)
{
    tbl_str(t, name);
    tbl_str(t, val);
}

void tbl_kv_int(tbl *t, const char *name, int64_t v)
{
    tbl_str(t, name);
    tbl_int(t, v);
}

int tbl_rows(const tbl *t)
{
    return (int)(t->ncells / (size_t)t->ncols);
}

static json_t *cell_json(const struct cell *c)
{
    switch (c->type) {
    case CELL_INT:
        return json_integer(c->i);
    case CELL_DBL:
        return json_real(c->d);
    default:
        return json_string(c->text);
    }
}

json_t *tbl_json(const tbl *t)
{
    if (t->oom)
        return NULL;
    size_t rows = t->ncells / (size_t)t->ncols;
    json_t *root = t->kv ? json_object() : json_array();
    if (!root)
        return NULL;
    for (size_t r = 0; r < rows; r++) {
        const struct cell *row = &t->cells[r * (size_t)t->ncols];
        if (t->kv) {
            json_t *v = cell_json(&row[1]);
            if (!v || json_object_set_new(root, row[0].text, v)) {
                json_decref(root);
                return NULL;
            }
            continue;
        }
        json_t *o = json_object();
        if (!o || json_array_append_new(root, o)) {
            json_decref(root);
            return NULL;
        }
        for (int c = 0; c < t->ncols; c++) {
            json_t *v = cell_json(&row[c]);
            if (!v || json_object_set_new(o, t->headers[c], v)) {
                json_decref(root);
                return NULL;
            }
        }
    }
    return root;
}

int tbl_print(const tbl *t, bool json, FILE *out)
{
    if (t->oom)
        return -ENOMEM;
    if (json) {
        json_t *j = tbl_json(t);
        if (!j)
            return -ENOMEM;
        int rc = json_dumpf(j, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        fputc('\n', out);
        json_decref(j);
        return rc ? -EIO : 0;
    }
    size_t rows = t->ncells / (size_t)t->ncols;
    size_t w[t->ncols];
    for (int c = 0; c < t->ncols; c++)
        w[c] = t->kv ? 0 : strlen(t->headers[c]);
    for (size_t r = 0; r < rows; r++)
        for (int c = 0; c < t->ncols; c++) {
            size_t l = strlen(t->cells[r * (size_t)t->ncols + (size_t)c].text);
            if (l > w[c])
                w[c] = l;
        }
    if (!t->kv) {
        for (int c = 0; c < t->ncols; c++) {
            if (c + 1 < t->ncols)
                fprintf(out, "%-*s  ", (int)w[c], t->headers[c]);
            else
                fprintf(out, "%s\n", t->headers[c]);
        }
    }
    for (size_t r = 0; r < rows; r++)
        for (int c = 0; c < t->ncols; c++) {
            const struct cell *cl = &t->cells[r * (size_t)t->ncols + (size_t)c];
            bool last = c + 1 == t->ncols;
            if (last)
                fprintf(out, "%s\n", cl->text);
            else if (cl->type != CELL_STR && !t->kv)
                fprintf(out, "%*s  ", (int)w[c], cl->text);
            else
                fprintf(out, "%-*s  ", (int)w[c], cl->text);
        }
    return ferror(out) ? -EIO : 0;
}
