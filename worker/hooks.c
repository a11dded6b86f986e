#include "worker/hooks.h"

#include "worker/conn.h"

int hooks_conn_upgrading(struct conn *c, const char **why)
{
    (void)c;
    (void)why;
    return 0;
}

void hooks_conn_opened(struct conn *c)
{
    (void)c;
}

void hooks_conn_closing(struct conn *c, unsigned code, const char *reason, const char *by)
{
    (void)c;
    (void)code;
    (void)reason;
    (void)by;
}

void hooks_conn_closed(struct conn *c, const char *why)
{
    (void)c;
    (void)why;
}

bool hooks_conn_plain_http(struct conn *c)
{
    (void)c;
    return false;
}
