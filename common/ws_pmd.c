#include "common/ws_pmd.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/*
 * RFC 6455 §9.1:
 *   extension-list  = 1#extension   (a comma list: empty elements are allowed)
 *   extension       = token *( OWS ";" OWS extension-param )
 *   extension-param = token [ OWS "=" OWS ( token / quoted-string ) ]
 * Each line is parsed whole before any offer of it is taken, so an offer followed by
 * garbage is never half-read.
 */

#define VALUE_MAX 8 /* longer values are never valid window bits: kept cut, judged bad */

/* Parameters of one permessage-deflate offer, RFC 7692 §7.1. */
#define P_SERVER_NCT   0x01
#define P_CLIENT_NCT   0x02
#define P_SERVER_WBITS 0x04
#define P_CLIENT_WBITS 0x08

struct offer {
    unsigned seen;    /* P_* given */
    bool bad;         /* declined: unknown, repeated or badly valued parameter */
    uint8_t server_wbits;
    uint8_t client_wbits; /* 0: given without a value */
};

/* tchar, RFC 7230 §3.2.6 */
static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static void skip_ows(const char **p)
{
    while (**p == ' ' || **p == '\t')
        (*p)++;
}

/* A token at *p: its length (0 when none), *p moved past it. */
static size_t take_token(const char **p)
{
    const char *s = *p;

    while (is_tchar((unsigned char)**p))
        (*p)++;
    return (size_t)(*p - s);
}

/*
 * A token or quoted-string value at *p, unquoted into v (VALUE_MAX bytes kept, NUL-
 * terminated; *len the full length). Returns false on a syntax error.
 */
static bool take_value(const char **p, char v[VALUE_MAX + 1], size_t *len)
{
    const char *s = *p;
    size_t n = 0;

    if (**p != '"') {
        n = take_token(p);
        if (n == 0)
            return false;
        memcpy(v, s, n < VALUE_MAX ? n : VALUE_MAX);
        v[n < VALUE_MAX ? n : VALUE_MAX] = '\0';
        *len = n;
        return true;
    }
    for ((*p)++;; (*p)++) { /* RFC 7230 §3.2.6 quoted-string */
        unsigned char c = (unsigned char)**p;
        if (c == '"')
            break;
        if (c == '\\') {
            c = (unsigned char)*++*p;
            if (c != '\t' && (c < 0x20 || c == 0x7f))
                return false;
        } else if (c != '\t' && (c < 0x20 || c == 0x7f)) {
            return false; /* the NUL at the end included: unterminated */
        }
        if (n < VALUE_MAX)
            v[n] = (char)c;
        n++;
    }
    (*p)++;
    v[n < VALUE_MAX ? n : VALUE_MAX] = '\0';
    *len = n;
    return true;
}

/* Window bits, RFC 7692 §7.1.2: 1*DIGIT in 8..15, no leading zero. 0 when bad. */
static uint8_t wbits(const char *v, size_t len)
{
    if (len == 1 && (v[0] == '8' || v[0] == '9'))
        return (uint8_t)(v[0] - '0');
    if (len == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5')
        return (uint8_t)(10 + v[1] - '0');
    return 0;
}

static void offer_param(struct offer *o, const char *name, size_t nlen, const char *v, size_t vlen,
                        bool has_value)
{
    static const struct {
        const char *name;
        unsigned bit;
    } known[] = {
        {"server_no_context_takeover", P_SERVER_NCT},
        {"client_no_context_takeover", P_CLIENT_NCT},
        {"server_max_window_bits", P_SERVER_WBITS},
        {"client_max_window_bits", P_CLIENT_WBITS},
    };
    unsigned bit = 0;

    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (strlen(known[i].name) == nlen && strncasecmp(known[i].name, name, nlen) == 0)
            bit = known[i].bit;
    if (bit == 0 || (o->seen & bit)) { /* §7: unknown or repeated declines the offer */
        o->bad = true;
        return;
    }
    o->seen |= bit;
    switch (bit) {
    case P_SERVER_NCT:
    case P_CLIENT_NCT:
        if (has_value)
            o->bad = true;
        break;
    case P_SERVER_WBITS: /* §7.1.2.1: a value is required */
        o->server_wbits = has_value ? wbits(v, vlen) : 0;
        if (o->server_wbits == 0)
            o->bad = true;
        break;
    default: /* P_CLIENT_WBITS, §7.1.2.2: the value is optional */
        o->client_wbits = has_value ? wbits(v, vlen) : 0;
        if (has_value && o->client_wbits == 0)
            o->bad = true;
        break;
    }
}

/* What we answer to an acceptable offer o; false when we cannot honour it. */
static bool offer_accept(const struct offer *o, struct ws_pmd *out)
{
    if (o->bad)
        return false;
    memset(out, 0, sizeof(*out));
    out->server_wbits = WS_PMD_WBITS_MAX;
    out->client_wbits = WS_PMD_WBITS_MAX;
    if (o->seen & P_SERVER_WBITS) {
        if (o->server_wbits < 9) /* zlib turns a raw window of 256 bytes down */
            return false;
        out->server_wbits = o->server_wbits;
        out->say_server_wbits = true;
    }
    if ((o->seen & P_CLIENT_WBITS) && o->client_wbits != 0) {
        out->client_wbits = o->client_wbits; /* §7.1.2.2: the same or a smaller value */
        out->say_client_wbits = true;
    }
    out->on = true;
    return true;
}

/* One header line: false on a syntax error; *found is set from the first offer taken. */
static bool parse_line(const char *p, struct ws_pmd *res, bool *found)
{
    for (;;) {
        const char *name, *pname;
        size_t nlen, plen, vlen = 0;
        char v[VALUE_MAX + 1];
        struct offer o;
        bool deflate, has_value;

        skip_ows(&p);
        if (*p == ',') { /* an empty element */
            p++;
            continue;
        }
        if (*p == '\0')
            return true;
        name = p;
        nlen = take_token(&p);
        if (nlen == 0)
            return false;
        deflate = nlen == 18 && strncasecmp(name, "permessage-deflate", 18) == 0;
        memset(&o, 0, sizeof(o));
        skip_ows(&p);
        while (*p == ';') {
            p++;
            skip_ows(&p);
            pname = p;
            plen = take_token(&p);
            if (plen == 0)
                return false;
            skip_ows(&p);
            has_value = *p == '=';
            if (has_value) {
                p++;
                skip_ows(&p);
                if (!take_value(&p, v, &vlen))
                    return false;
                skip_ows(&p);
            }
            if (deflate)
                offer_param(&o, pname, plen, v, vlen, has_value);
        }
        if (*p != ',' && *p != '\0')
            return false;
        if (deflate && !*found && offer_accept(&o, res))
            *found = true;
    }
}

bool ws_pmd_negotiate(const char *const *values, size_t n, struct ws_pmd *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < n; i++) {
        struct ws_pmd res;
        bool found = false;

        memset(&res, 0, sizeof(res));
        if (!parse_line(values[i], &res, &found)) {
            out->malformed = true;
            continue;
        }
        if (found) {
            res.malformed = out->malformed;
            *out = res;
            return true;
        }
    }
    return false;
}

size_t ws_pmd_answer(const struct ws_pmd *p, char *out, size_t cap)
{
    char sw[32] = "", cw[32] = "";
    int n;

    if (!p->on)
        return 0;
    if (p->say_server_wbits)
        snprintf(sw, sizeof(sw), "; server_max_window_bits=%u", (unsigned)p->server_wbits);
    if (p->say_client_wbits)
        snprintf(cw, sizeof(cw), "; client_max_window_bits=%u", (unsigned)p->client_wbits);
    n = snprintf(out, cap,
                 "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
                 "client_no_context_takeover%s%s\r\n",
                 sw, cw);
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}
