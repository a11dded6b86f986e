#ifndef WSGATE_COMMON_TEXT_H
#define WSGATE_COMMON_TEXT_H

/* Small text helpers shared by the parsers of common/. */

/* The value of hex digit c (0-15), or -1 when c is not one. */
static inline int text_hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#endif /* WSGATE_COMMON_TEXT_H */
