/* test_subproc: the child-process pipes behind custom rewards (core/subproc.h, text/reward_cmd.h): lines both
 * ways, the timeout, how a child ended, a whole process group killed on stop, the kill-all used by die(), and
 * the reward protocol's parsing (rewards, extras and their per-step means, the errors). */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/subproc.h"
#include "core/timer.h"
#include "test.h"
#include "text/reward_cmd.h"

/* Does process group pgid have a member that is not a zombie (/proc/<pid>/stat: "pid (comm) S ppid pgrp")? */
static bool group_alive(pid_t pgid) {
    DIR *d = opendir("/proc");
    if (!d) return kill(-pgid, 0) == 0;
    bool alive = false;
    struct dirent *e;
    while (!alive && (e = readdir(d))) {
        char path[300], buf[512];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        const char *rp = strrchr(buf, ')');
        char state;
        int ppid, pgrp;
        if (rp && sscanf(rp + 1, " %c %d %d", &state, &ppid, &pgrp) == 3 && pgrp == pgid && state != 'Z') alive = true;
    }
    closedir(d);
    return alive;
}

static void test_lines(void) {
    subproc p;
    s2d_err err;
    EXPECT(subproc_start(&p, "cat", 1024, &err), "%s", err.msg);
    char *line;
    size_t len;
    EXPECT(subproc_write(&p, "one\ntwo\n", 8, 5, &err), "%s", err.msg);
    EXPECT(subproc_read_line(&p, 5, &line, &len, &err) && len == 3 && strcmp(line, "one") == 0, "first line");
    EXPECT(subproc_read_line(&p, 5, &line, &len, &err) && strcmp(line, "two") == 0, "second line");
    pid_t pid = p.pid;
    subproc_stop(&p, 2);
    EXPECT(p.reaped && WIFEXITED(p.status) && WEXITSTATUS(p.status) == 0, "cat ends at end of input");
    EXPECT(!group_alive(pid), "nothing left of its group");
}

static void test_timeout_and_exit(void) {
    subproc p;
    s2d_err err;
    char *line;
    size_t len;
    EXPECT(subproc_start(&p, "sleep 30", 1024, &err), "%s", err.msg);
    double t0 = time_now();
    EXPECT(!subproc_read_line(&p, 0.2, &line, &len, &err), "a silent child times out");
    EXPECT(strstr(err.msg, "no reply from the command within 0.2 s (timeout)") != NULL, "message: %s", err.msg);
    EXPECT(time_now() - t0 < 5, "the timeout is kept (%.1f s)", time_now() - t0);
    pid_t pid = p.pid;
    subproc_stop(&p, 0.1); /* does not read its stdin: SIGKILLed after the grace */
    EXPECT(!group_alive(pid), "the sleeping child is gone");

    EXPECT(subproc_start(&p, "read x; exit 3", 1024, &err), "%s", err.msg);
    EXPECT(subproc_write(&p, "go\n", 3, 5, &err), "%s", err.msg);
    EXPECT(!subproc_read_line(&p, 5, &line, &len, &err), "exit is an error");
    EXPECT(strstr(err.msg, "the command exited with status 3") != NULL, "message: %s", err.msg);
    subproc_stop(&p, 1);

    EXPECT(subproc_start(&p, "exec sh -c 'kill -9 $$'", 1024, &err), "%s", err.msg);
    EXPECT(!subproc_read_line(&p, 5, &line, &len, &err), "a killed child is an error");
    EXPECT(strstr(err.msg, "was killed by signal 9") != NULL, "message: %s", err.msg);
    subproc_stop(&p, 1);

    /* a dead reader is an error, not a SIGPIPE that ends the test */
    EXPECT(subproc_start(&p, "exit 0", 1024, &err), "%s", err.msg);
    usleep(200 * 1000);
    static char big[1 << 17];
    memset(big, 'x', sizeof big);
    EXPECT(!subproc_write(&p, big, sizeof big, 5, &err), "writing to a dead child fails");
    EXPECT(strstr(err.msg, "broken pipe") != NULL && strstr(err.msg, "exited with status 0"), "message: %s", err.msg);
    subproc_stop(&p, 1);

    EXPECT(subproc_start(&p, "printf 'aaaaaaaaaaaaaaaaaaaa'; sleep 5", 8, &err), "%s", err.msg);
    EXPECT(!subproc_read_line(&p, 5, &line, &len, &err) && strstr(err.msg, "longer than 8 bytes"), "long line: %s",
           err.msg);
    subproc_stop(&p, 0.1);
}

static void test_group_kill(void) {
    subproc p;
    s2d_err err;
    /* the shell's background children are in the group too */
    EXPECT(subproc_start(&p, "sleep 30 & sleep 30 & wait", 1024, &err), "%s", err.msg);
    usleep(100 * 1000);
    pid_t pid = p.pid;
    EXPECT(group_alive(pid), "group running");
    s2d_children_kill_all(); /* what die() and the signal handler call */
    usleep(200 * 1000);
    EXPECT(!group_alive(pid), "kill-all ends the whole group");
    subproc_stop(&p, 1);
    EXPECT(p.reaped && WIFSIGNALED(p.status) && WTERMSIG(p.status) == SIGKILL, "the shell was SIGKILLed");
}

static void test_reward_protocol(void) {
    s2d_err err;
    reward_cmd *rc;
    /* replies by the request's id: 1 -> extras, 2 -> no reward, 3 -> NaN, 4 -> not JSON, 5 -> infinite extra */
    const char *script =
        "while read -r line; do case \"$line\" in "
        "*'\"id\": \"1\"'*) echo '{\"reward\": 0.5, \"len\": 4, \"ok\": true, \"note\": \"s\", \"id\": 9}';; "
        "*'\"id\": \"2\"'*) echo '{\"score\": 1}';; "
        "*'\"id\": \"3\"'*) echo '{\"reward\": NaN}';; "
        "*'\"id\": \"4\"'*) echo 'oops';; "
        "*'\"id\": \"5\"'*) echo '{\"reward\": 1, \"len\": 1e999}';; "
        "*) echo '{\"reward\": -1, \"len\": 8, \"ok\": false}';; esac; done";
    EXPECT(reward_cmd_start(script, 5, &rc, &err), "%s", err.msg);
    double r = 0;
    reward_cmd_step_reset(rc);
    EXPECT(reward_cmd_score(rc, "1", "rec 1", "p \"q\"\n", "resp\t\\", "a", &r, &err) && r == 0.5, "reward 0.5: %s",
           err.msg);
    EXPECT(reward_cmd_score(rc, "0", "rec 0", "p", "r", "a", &r, &err) && r == -1, "reward -1");
    const char *name;
    double mean;
    EXPECT(reward_cmd_n_extras(rc) == 2, "extras: len and ok (not note, not id): %d", reward_cmd_n_extras(rc));
    EXPECT(reward_cmd_extra(rc, 0, &name, &mean) && strcmp(name, "len") == 0 && mean == 6, "len mean 6");
    EXPECT(reward_cmd_extra(rc, 1, &name, &mean) && strcmp(name, "ok") == 0 && mean == 0.5, "ok mean 0.5");
    reward_cmd_step_reset(rc);
    EXPECT(!reward_cmd_extra(rc, 0, &name, &mean), "a new step starts empty");
    EXPECT(!reward_cmd_score(rc, "2", "rec 2", "p", "r", "a", &r, &err) && strstr(err.msg, "no numeric \"reward\"") &&
               strstr(err.msg, "rec 2 (id 2)"), "missing reward: %s", err.msg);
    EXPECT(!reward_cmd_score(rc, "3", "rec 3", "p", "r", "a", &r, &err) && strstr(err.msg, "non-finite"),
           "NaN: %s", err.msg);
    EXPECT(!reward_cmd_score(rc, "4", "rec 4", "p", "r", "a", &r, &err) && strstr(err.msg, "not valid JSON: oops"),
           "garbage: %s", err.msg);
    EXPECT(!reward_cmd_score(rc, "5", "rec 5", "p", "r", "a", &r, &err) && strstr(err.msg, "\"len\" is not finite"),
           "infinite extra: %s", err.msg);
    reward_cmd_close(rc);
}

int main(void) {
    RUN_TEST(test_lines);
    RUN_TEST(test_timeout_and_exit);
    RUN_TEST(test_group_kill);
    RUN_TEST(test_reward_protocol);
    return TEST_SUMMARY();
}
