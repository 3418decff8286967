/* TLS and credentials end to end: kapi-sim serving https with a throwaway CA made by the
 * openssl CLI at test time. Right CA + token works; a wrong CA, a wrong token and an
 * unreachable server each give a clear error; a token never shows up in a message or log. */
#include "ksim.h"

#include "../core/common.h"

#include <podclaim/informer.h>

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TOKEN "t0ken-that-must-never-be-logged"

static ksim sim;
static char certs[64];
static char ca[128], wrong_ca[128];

static void sh(const char *cmd)
{
    int rc = system(cmd);
    cr_assert_eq(rc, 0, "command failed (%d): %s", rc, cmd);
}

static char pool_name[32];

static void setup(void)
{
    ksim_mkdir(certs, sizeof(certs));
    cr_assert(certs[0]);
    char cmd[2048];
    /* CA, a server certificate for 127.0.0.1 signed by it, and an unrelated second CA */
    snprintf(cmd, sizeof(cmd),
             "cd %s && "
             "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 1 "
             "-subj /CN=podclaim-test-ca >/dev/null 2>&1 && "
             "openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr "
             "-subj /CN=127.0.0.1 >/dev/null 2>&1 && "
             "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > ext.cnf && "
             "openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
             "-out srv.crt -days 1 -extfile ext.cnf >/dev/null 2>&1 && "
             "openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.crt "
             "-days 1 -subj /CN=some-other-ca >/dev/null 2>&1",
             certs);
    sh(cmd);
    snprintf(ca, sizeof(ca), "%s/ca.crt", certs);
    snprintf(wrong_ca, sizeof(wrong_ca), "%s/other.crt", certs);
    char crt[128], key[128];
    snprintf(crt, sizeof(crt), "%s/srv.crt", certs);
    snprintf(key, sizeof(key), "%s/srv.key", certs);
    /* a pool of this test's own: Criterion runs two tests at once (--jobs=2), and on the real
     * server (one cluster for all) a shared pool was reset by one test's front while the
     * other's created it ("already exists") */
    snprintf(pool_name, sizeof(pool_name), "p%d", (int)getpid());
    char pool_arg[64];
    snprintf(pool_arg, sizeof(pool_arg), "tls/%s=3", pool_name);
    const char *args[] = {"--tls-cert", crt,      "--tls-key",   key,  "--token", TOKEN,
                          "--pool",     pool_arg, "--warmup-ms", "10", NULL};
    cr_assert_eq(ksim_start(&sim, args, true, ca, TOKEN), 0);
}

static void teardown(void)
{
    ksim_stop(&sim);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", certs);
    if (system(cmd) != 0)
        cr_log_warn("could not remove %s", certs);
}

/* Collects every log line, to prove the token never appears in one. */
typedef struct logbuf {
    char text[65536];
    size_t len;
} logbuf;

static void capture(void *arg, int level, const char *line)
{
    (void)level;
    logbuf *b = arg;
    size_t n = strlen(line);
    if (b->len + n + 2 < sizeof(b->text)) {
        memcpy(b->text + b->len, line, n);
        b->len += n;
        b->text[b->len++] = '\n';
        b->text[b->len] = '\0';
    }
}

static int check_named(const char *server, const char *ca_file, const char *token, bool insecure,
                       const char *tls_name, logbuf *lb, char *err, size_t errlen)
{
    pc_kube_options o = {.server = server,
                         .tls_server_name = tls_name,
                         .ca_file = ca_file,
                         .token = token,
                         .insecure_skip_tls_verify = insecure,
                         .connect_timeout_ns = 2000000000LL,
                         .log = lb ? capture : NULL,
                         .log_arg = lb,
                         .log_level = PC_KUBE_LOG_DEBUG,
                         .log_level_set = true};
    pc_kube_client *c;
    int rc = pc_kube_client_new(&o, &c, err, errlen);
    if (rc)
        return rc;
    rc = pc_kube_client_check(c, err, errlen);
    pc_kube_client_free(c);
    return rc;
}

static int check(const char *server, const char *ca_file, const char *token, bool insecure,
                 logbuf *lb, char *err, size_t errlen)
{
    return check_named(server, ca_file, token, insecure, NULL, lb, err, errlen);
}

Test(tls, right_ca_and_token_work, .init = setup, .fini = teardown, .timeout = 30)
{
    char err[512] = "";
    static logbuf lb;
    int rc = check(sim.url, ca, TOKEN, false, &lb, err, sizeof(err));
    cr_assert_eq(rc, 0, "got %d: %s", rc, err);
    cr_assert_null(strstr(lb.text, TOKEN), "token in the log: %s", lb.text);
}

Test(tls, wrong_ca_is_a_clear_tls_error, .init = setup, .fini = teardown, .timeout = 30)
{
    char err[512] = "";
    int rc = check(sim.url, wrong_ca, TOKEN, false, NULL, err, sizeof(err));
    cr_assert_eq(rc, -EPROTO, "got %d: %s", rc, err);
    cr_assert(strstr(err, "TLS"), "message: %s", err);
    cr_assert(strstr(err, sim.url), "message names the server: %s", err);
    cr_assert_null(strstr(err, TOKEN), "token in the message: %s", err);
    /* no CA at all (system store) fails the same way */
    rc = check(sim.url, NULL, TOKEN, false, NULL, err, sizeof(err));
    cr_assert_eq(rc, -EPROTO, "got %d: %s", rc, err);
}

Test(tls, skipping_verification_is_explicit_and_warns, .init = setup, .fini = teardown,
     .timeout = 30)
{
    char err[512] = "";
    static logbuf lb;
    int rc = check(sim.url, NULL, TOKEN, true, &lb, err, sizeof(err));
    cr_assert_eq(rc, 0, "got %d: %s", rc, err);
    cr_assert(strstr(lb.text, "level=warn") && strstr(lb.text, "verification disabled"),
              "no warning logged: %s", lb.text);
}

Test(tls, refuses_skipping_verification_together_with_a_ca, .timeout = 30)
{
    /* as kubectl does: the CA would be ignored while the user believes it is used */
    char err[512] = "";
    pc_kube_options o = {.server = "https://127.0.0.1:6443",
                         .ca_pem = "-----BEGIN CERTIFICATE-----\n",
                         .insecure_skip_tls_verify = true};
    pc_kube_client *c = NULL;
    cr_assert_eq(pc_kube_client_new(&o, &c, err, sizeof(err)), -EINVAL, "accepted: %s", err);
    cr_assert(strstr(err, "insecure-skip-tls-verify together with a certificate authority"),
              "message: %s", err);
    o.ca_pem = NULL;
    o.ca_file = "/etc/ssl/certs/ca-certificates.crt";
    cr_assert_eq(pc_kube_client_new(&o, &c, err, sizeof(err)), -EINVAL, "accepted: %s", err);
    cr_assert_null(c);
}

Test(tls, verifies_the_tls_server_name_instead_of_the_host, .init = setup, .fini = teardown,
     .timeout = 30)
{
    /* The certificate names 127.0.0.1 and localhost. With tls-server-name the connection
     * still goes to the server's address (127.0.0.1), but SNI and verification use the name:
     * "localhost" passes, a name the certificate does not carry fails as a TLS error (not a
     * name lookup: wrong.podclaim.test is never resolved). */
    char err[512] = "";
    int rc = check_named(sim.url, ca, TOKEN, false, "localhost", NULL, err, sizeof(err));
    cr_assert_eq(rc, 0, "localhost: got %d: %s", rc, err);
    rc = check_named(sim.url, ca, TOKEN, false, "wrong.podclaim.test", NULL, err, sizeof(err));
    cr_assert_eq(rc, -EPROTO, "wrong name: got %d: %s", rc, err);
    cr_assert(strstr(err, sim.url), "the message names the configured server: %s", err);
}

Test(tls, wrong_token_is_a_clear_auth_error, .init = setup, .fini = teardown, .timeout = 30)
{
    char err[512] = "";
    static logbuf lb;
    int rc = check(sim.url, ca, "not-the-" TOKEN, false, &lb, err, sizeof(err));
    cr_assert_eq(rc, -EACCES, "got %d: %s", rc, err);
    cr_assert(strstr(err, "401"), "message: %s", err);
    cr_assert(strstr(err, "rejected the credentials"), "message: %s", err);
    cr_assert_null(strstr(err, TOKEN), "token in the message: %s", err);
    cr_assert_null(strstr(lb.text, TOKEN), "token in the log: %s", lb.text);
    rc = check(sim.url, ca, NULL, false, NULL, err, sizeof(err));
    cr_assert_eq(rc, -EACCES, "no token: got %d: %s", rc, err);
}

/* A loopback port nothing listens on: one the kernel just handed out and took back.
 * (A fixed port such as 1 is not safe: on these machines something answered there once.) */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd); /* bound, never listened: connecting to it is refused */
    return ntohs(a.sin_port);
}

Test(tls, unreachable_server_is_a_clear_error, .timeout = 30)
{
    char err[512] = "", url[64], where[32];
    int port = closed_port();
    snprintf(url, sizeof(url), "https://127.0.0.1:%d", port);
    snprintf(where, sizeof(where), "127.0.0.1:%d", port);
    int rc = check(url, NULL, TOKEN, false, NULL, err, sizeof(err));
    cr_assert_eq(rc, -ECONNREFUSED, "got %d: %s", rc, err);
    cr_assert(strstr(err, "unreachable") && strstr(err, where), "message: %s", err);
}

/* A kubeconfig in the real format (base64 CA data, token) drives an informer over TLS. */
Test(tls, kubeconfig_with_ca_data_and_token_syncs_an_informer, .init = setup, .fini = teardown,
     .timeout = 30)
{
    char cmd[1024], cfg[128];
    snprintf(cfg, sizeof(cfg), "%s/kubeconfig", certs);
    snprintf(cmd, sizeof(cmd),
             "cd %s && printf 'apiVersion: v1\\nkind: Config\\ncurrent-context: sim\\n"
             "clusters:\\n- name: sim\\n  cluster:\\n    server: %s\\n"
             "    certificate-authority-data: %%s\\n"
             "contexts:\\n- name: sim\\n  context:\\n    cluster: sim\\n    user: u\\n"
             "    namespace: tls\\n"
             "users:\\n- name: u\\n  user:\\n    token: %s\\n' \"$(base64 -w0 ca.crt)\" > "
             "kubeconfig",
             certs, sim.url, TOKEN);
    sh(cmd);
    pc_kube_client *c;
    char err[512];
    int rc = pc_kube_client_new_kubeconfig(cfg, NULL, NULL, &c, err, sizeof(err));
    cr_assert_eq(rc, 0, "got %d: %s", rc, err);
    cr_assert_str_eq(pc_kube_client_namespace(c), "tls");
    pc_informer_config ic = {.client = c, .namespace_ = "tls", .pool = pool_name};
    pc_informer *inf;
    cr_assert_eq(pc_informer_new(&ic, &inf), 0);
    cr_assert_eq(pc_informer_start(inf), 0);
    pc_informer_stats s;
    bool ok = PC_TEST_WAIT_UNTIL(({
                                     pc_informer_stats_read(inf, &s);
                                     s.idle == 3;
                                 }),
                                 10000);
    cr_assert(ok, "idle=%llu pods=%llu", (unsigned long long)s.idle, (unsigned long long)s.pods);
    pc_informer_free(inf);
    pc_kube_client_free(c);
}

static void write_token(const char *path, const char *tok)
{
    /* like the kubelet: write a new file, rename it over the old one */
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%s.new", path);
    FILE *f = fopen(tmp, "w");
    cr_assert_not_null(f);
    fprintf(f, "%s\n", tok);
    fclose(f);
    cr_assert_eq(rename(tmp, path), 0);
}

/* Poll pc_kube_client_check until it returns `want`; each try is a TLS handshake, so the
 * polling interval is 50 ms rather than the 200 us of PC_TEST_WAIT_UNTIL. */
static bool check_becomes(pc_kube_client *c, int want, int64_t ms)
{
    char err[512];
    int64_t end = pc_test_now_ms() + ms;
    do {
        if (pc_kube_client_check(c, err, sizeof(err)) == want)
            return true;
        struct timespec ts = {0, 50000000};
        nanosleep(&ts, NULL);
    } while (pc_test_now_ms() < end);
    return false;
}

Test(tls, rereads_a_rotated_token_file, .init = setup, .fini = teardown, .timeout = 30)
{
    char tf[128], err[512];
    snprintf(tf, sizeof(tf), "%s/token", certs);
    write_token(tf, TOKEN);
    pc_kube_options o = {.server = sim.url, .ca_file = ca, .token_file = tf};
    pc_kube_client *c;
    cr_assert_eq(pc_kube_client_new(&o, &c, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(pc_kube_client_check(c, err, sizeof(err)), 0, "%s", err);
    write_token(tf, "rotated-to-something-else");
    cr_assert(check_becomes(c, -EACCES, 5000), "the new (wrong) token was never used");
    write_token(tf, TOKEN);
    cr_assert(check_becomes(c, 0, 5000), "the rotated-back token was never used");
    pc_kube_client_free(c);
}
