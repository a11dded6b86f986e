#include "worker/hooks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "common/log.h"
#include "common/ws_close.h"
#include "worker/admin.h"
#include "worker/auth.h"
#include "worker/conn.h"
#include "worker/redis.h"
#include "worker/registry.h"
#include "worker/tombs.h"
#include "worker/worker.h"
#include "common/ws_hs.h"

/* worker/demo.html, compiled in by the Makefile. */
extern const char demo_html[];
extern const size_t demo_html_len;

int hooks_conn_upgrading(struct conn *c, const char **why)
{
    struct worker *w = c->w;
    char **names;
    size_t n;
    const char *v;
    int status = auth_upgrade(c, &names, &n, why);

    if (status != 0)
        return status;
    v = ws_hs_param(c->hs, "hello", 0);
    if (v != NULL && strcmp(v, "1") == 0)
        c->flags |= CONN_F_HELLO;
    if (registry_add(&w->reg, c, names, n) < 0) {
        registry_free_names(names, n);
        *why = "out of memory";
        return 503;
    }
    registry_free_names(names, n);
    return 0;
}

static json_t *event_new_json(struct conn *c, const char *type)
{
    struct worker *w = c->w;
    char id[CONN_ID_MAX], remote[CONN_REMOTE_MAX];
    json_t *ev = json_object(), *groups = json_array();
    struct timespec ts;

    if (ev == NULL || groups == NULL) {
        json_decref(ev);
        json_decref(groups);
        return NULL;
    }
    for (size_t i = 0; i < c->ngroups; i++)
        json_array_append_new(groups, json_string(c->groups[i].group->name));
    clock_gettime(CLOCK_REALTIME, &ts);
    json_object_set_new(ev, "type", json_string(type));
    json_object_set_new(ev, "conn", json_string(conn_id(c, id, sizeof(id))));
    json_object_set_new(ev, "gateway", json_string(w->cfg->id));
    json_object_set_new(ev, "worker", json_integer(w->num));
    json_object_set_new(ev, "groups", groups);
    json_object_set_new(ev, "remote", json_string(conn_remote(c, remote, sizeof(remote))));
    if (auth_user(c) != NULL)
        json_object_set_new(ev, "user", json_string(auth_user(c)));
    if (auth_jti(c) != NULL)
        json_object_set_new(ev, "jti", json_string(auth_jti(c)));
    json_object_set_new(ev, "ts",
                        json_integer((json_int_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000));
    return ev;
}

static void event_publish(struct conn *c, json_t *ev)
{
    struct worker *w = c->w;
    char *text;

    if (ev == NULL)
        return;
    text = json_dumps(ev, JSON_COMPACT);
    json_decref(ev);
    if (text == NULL)
        return;
    wredis_publish(w, w->cfg->events_channel, text, strlen(text));
    w->slot->st.events_published++;
    free(text);
}

void hooks_conn_opened(struct conn *c)
{
    if (tombs_check(c)) { /* closed at once, with the tombstone's code and reason */
        if (c->w->cfg->events_channel[0] != '\0')
            event_publish(c, event_new_json(c, "open"));
        return;
    }
    if (c->flags & CONN_F_HELLO) {
        /* Browsers cannot read X-Wsgate-Conn: tell the id in a first message. */
        char id[CONN_ID_MAX], msg[CONN_ID_MAX + 32];
        int n = snprintf(msg, sizeof(msg), "{\"wsgate\":\"hello\",\"conn\":\"%s\"}",
                         conn_id(c, id, sizeof(id)));
        if (conn_send_text(c, msg, (size_t)n) < 0)
            return;
    }
    if (c->w->cfg->events_channel[0] != '\0')
        event_publish(c, event_new_json(c, "open"));
    if (c->w->draining && c->w->listen_fd < 0) /* a handshake finished during a drain */
        conn_close(c, WS_CLOSE_GOING_AWAY, c->w->drain_reason, "drain");
}

static enum close_by close_by_index(const char *by)
{
    if (strncmp(by, "order", 5) == 0)
        return CLOSE_BY_ORDER;
    if (strcmp(by, "client") == 0)
        return CLOSE_BY_CLIENT;
    if (strcmp(by, "drain") == 0)
        return CLOSE_BY_DRAIN;
    if (strcmp(by, "timeout") == 0)
        return CLOSE_BY_TIMEOUT;
    if (strcmp(by, "slow") == 0)
        return CLOSE_BY_SLOW;
    if (strcmp(by, "busy") == 0)
        return CLOSE_BY_BUSY;
    if (strcmp(by, "expired") == 0)
        return CLOSE_BY_EXPIRED;
    if (strcmp(by, "tombstone") == 0)
        return CLOSE_BY_TOMBSTONE;
    return CLOSE_BY_ERROR;
}

static void close_event(struct conn *c, unsigned code, const char *reason, const char *by)
{
    json_t *ev;

    if (!(c->flags & CONN_F_INDEXED) || (c->flags & CONN_F_EVENT_DONE))
        return;
    c->flags |= CONN_F_EVENT_DONE;
    c->w->slot->st.closes_by[close_by_index(by)]++;
    if (c->w->cfg->events_channel[0] == '\0')
        return;
    ev = event_new_json(c, "close");
    if (ev == NULL)
        return;
    json_object_set_new(ev, "code", json_integer(code));
    json_object_set_new(ev, "reason", json_string(reason != NULL ? reason : ""));
    json_object_set_new(ev, "by", json_string(by));
    event_publish(c, ev);
}

void hooks_conn_closing(struct conn *c, unsigned code, const char *reason, const char *by)
{
    close_event(c, code, reason, by);
}

void hooks_conn_closed(struct conn *c, const char *why)
{
    /* Gone without a close handshake: 1006 (§7.1.5), reported with the cause. */
    bool client = strstr(why, "eof") != NULL || strstr(why, "reset") != NULL;

    close_event(c, WS_CLOSE_ABNORMAL, why, client ? "client" : "error");
    auth_closed(c);
    registry_remove(&c->w->reg, c);
}

bool hooks_conn_plain_http(struct conn *c)
{
    char head[256];
    int n;

    if (c->flags & CONN_F_ADMIN) {
        if (!admin_answer(c))
            conn_refuse(c, 404, "not found"); /* the admin port never upgrades */
        return true;
    }

    if (strcmp(c->hs->method, "GET") != 0 || c->hs->path == NULL ||
        (strcmp(c->hs->path, "/") != 0 && strcmp(c->hs->path, "/index.html") != 0))
        return false;
    n = snprintf(head, sizeof(head),
                 "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                 "Content-Length: %zu\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
                 demo_html_len);
    conn_http_respond(c, head, (size_t)n, demo_html, demo_html_len);
    return true;
}
