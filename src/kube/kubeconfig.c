/* Client construction from a kubeconfig file or from in-cluster settings.
 *
 * Flow: kubeconfig / service account -> [kubeconfig] -> pc_kube_options -> client.
 *
 * The kubeconfig is read with libyaml's document loader (files are a few KB) and walked:
 * current-context (or the named one) -> context {cluster, user, namespace} -> the clusters
 * and users lists, entries matched by `name`. *-data fields are base64 PEM. exec and
 * auth-provider users are refused with a clear error rather than silently sending no
 * credentials.
 */
#include "kube_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#define PC__KUBECONFIG_MAX ((size_t)4 << 20)

/* ---- base64 ------------------------------------------------------------------------------- */

static int b64val(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+' || ch == '-')
        return 62;
    if (ch == '/' || ch == '_')
        return 63;
    return -1;
}

/* Decode standard base64 (whitespace ignored, padding optional). Returns 0 and a malloc'd
 * buffer (NUL-terminated) or -EINVAL / -ENOMEM. */
static int b64decode(const char *in, char **out, size_t *out_len)
{
    size_t n = strlen(in);
    char *o = malloc(n / 4 * 3 + 4);
    if (!o)
        return -ENOMEM;
    size_t len = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)in[i];
        if (ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t')
            continue;
        if (ch == '=')
            break;
        int v = b64val(ch);
        if (v < 0) {
            free(o);
            return -EINVAL;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[len++] = (char)((acc >> bits) & 0xff);
        }
    }
    o[len] = '\0';
    *out = o;
    *out_len = len;
    return 0;
}

/* ---- YAML navigation ---------------------------------------------------------------------- */

static yaml_node_t *map_get(yaml_document_t *d, yaml_node_t *m, const char *key)
{
    if (!m || m->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(d, p->key);
        if (k && k->type == YAML_SCALAR_NODE && strcmp((char *)k->data.scalar.value, key) == 0)
            return yaml_document_get_node(d, p->value);
    }
    return NULL;
}

static const char *scalar(yaml_node_t *n)
{
    if (!n || n->type != YAML_SCALAR_NODE)
        return NULL;
    return (const char *)n->data.scalar.value;
}

static const char *map_str(yaml_document_t *d, yaml_node_t *m, const char *key)
{
    const char *s = scalar(map_get(d, m, key));
    return s && s[0] ? s : NULL;
}

/* In list `list` (clusters/users/contexts), the `inner` mapping of the entry named `name`. */
static yaml_node_t *named(yaml_document_t *d, yaml_node_t *root, const char *list, const char *name,
                          const char *inner)
{
    yaml_node_t *seq = map_get(d, root, list);
    if (!seq || seq->type != YAML_SEQUENCE_NODE)
        return NULL;
    for (yaml_node_item_t *i = seq->data.sequence.items.start; i < seq->data.sequence.items.top;
         i++) {
        yaml_node_t *e = yaml_document_get_node(d, *i);
        const char *n = map_str(d, e, "name");
        if (n && strcmp(n, name) == 0) {
            yaml_node_t *in = map_get(d, e, inner);
            return in ? in : e; /* an entry without the inner mapping: empty settings */
        }
    }
    return NULL;
}

/* Resolve a path relative to the kubeconfig's folder. Returns a malloc'd string. */
static char *resolve(const char *dir, const char *p)
{
    if (!p)
        return NULL;
    if (p[0] == '/' || !dir)
        return strdup(p);
    size_t n = strlen(dir) + strlen(p) + 2;
    char *r = malloc(n);
    if (r)
        snprintf(r, n, "%s/%s", dir, p);
    return r;
}

static void wipe_scalar(yaml_node_t *n)
{
    if (n && n->type == YAML_SCALAR_NODE && n->data.scalar.value)
        explicit_bzero(n->data.scalar.value, n->data.scalar.length);
}

static bool truthy(const char *s)
{
    return s && (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "yes") == 0);
}

int pc_kube_client_new_kubeconfig(const char *path, const char *context,
                                  const pc_kube_options *tuning, pc_kube_client **out, char *err,
                                  size_t errlen)
{
    char pathbuf[4096];
    if (!path) {
        /* $KUBECONFIG may hold a list; the first entry is the one we read. */
        const char *env = getenv("KUBECONFIG");
        if (env && env[0]) {
            snprintf(pathbuf, sizeof(pathbuf), "%s", env);
            char *colon = strchr(pathbuf, ':');
            if (colon)
                *colon = '\0';
        } else {
            const char *home = getenv("HOME");
            snprintf(pathbuf, sizeof(pathbuf), "%s/.kube/config", home ? home : "");
        }
        path = pathbuf;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        pc__kube_errf(err, errlen, "kubeconfig %s: %s", path, strerror(e));
        return -e;
    }
    /* libyaml holds the whole document in memory (100 MB took 140 MB and a second here): a
     * kubeconfig is a few KB, so anything near the bound is not one. */
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && st.st_size > (off_t)PC__KUBECONFIG_MAX) {
        pc__kube_errf(err, errlen, "kubeconfig %s: larger than %zu bytes", path,
                      PC__KUBECONFIG_MAX);
        fclose(f);
        return -EMSGSIZE;
    }
    yaml_parser_t parser;
    yaml_document_t doc;
    int rc = -EINVAL;
    char *dir = NULL, *ca_file = NULL, *cert_file = NULL, *key_file = NULL, *token_file = NULL;
    char *ca = NULL, *cert = NULL, *key = NULL;
    size_t ca_len = 0, cert_len = 0, key_len = 0;
    bool have_doc = false;

    if (!yaml_parser_initialize(&parser)) {
        fclose(f);
        pc__kube_errf(err, errlen, "kubeconfig %s: out of memory", path);
        return -ENOMEM;
    }
    yaml_parser_set_input_file(&parser, f);
    if (!yaml_parser_load(&parser, &doc)) {
        pc__kube_errf(err, errlen, "kubeconfig %s: YAML error at line %zu: %s", path,
                      parser.problem_mark.line + 1, parser.problem ? parser.problem : "unknown");
        goto out;
    }
    have_doc = true;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root || root->type != YAML_MAPPING_NODE) {
        pc__kube_errf(err, errlen, "kubeconfig %s: not a kubeconfig (no top-level mapping)", path);
        goto out;
    }
    if (!context)
        context = map_str(&doc, root, "current-context");
    if (!context) {
        pc__kube_errf(err, errlen, "kubeconfig %s: no context given and no current-context", path);
        rc = -ENOENT;
        goto out;
    }
    yaml_node_t *ctx = named(&doc, root, "contexts", context, "context");
    if (!ctx) {
        pc__kube_errf(err, errlen, "kubeconfig %s: context \"%s\" not found", path, context);
        rc = -ENOENT;
        goto out;
    }
    const char *cluster_name = map_str(&doc, ctx, "cluster");
    const char *user_name = map_str(&doc, ctx, "user");
    const char *ns = map_str(&doc, ctx, "namespace");
    yaml_node_t *cluster =
            cluster_name ? named(&doc, root, "clusters", cluster_name, "cluster") : NULL;
    if (!cluster) {
        pc__kube_errf(err, errlen, "kubeconfig %s: context \"%s\": cluster \"%s\" not found", path,
                      context, cluster_name ? cluster_name : "");
        rc = -ENOENT;
        goto out;
    }
    yaml_node_t *user = NULL;
    if (user_name) {
        user = named(&doc, root, "users", user_name, "user");
        if (!user) {
            pc__kube_errf(err, errlen, "kubeconfig %s: context \"%s\": user \"%s\" not found", path,
                          context, user_name);
            rc = -ENOENT;
            goto out;
        }
        if (map_get(&doc, user, "exec") || map_get(&doc, user, "auth-provider")) {
            pc__kube_errf(err, errlen,
                          "kubeconfig %s: user \"%s\": exec/auth-provider credentials are not "
                          "supported; use a token, tokenFile or client certificate",
                          path, user_name);
            goto out;
        }
    }
    const char *server = map_str(&doc, cluster, "server");
    if (!server) {
        pc__kube_errf(err, errlen, "kubeconfig %s: cluster \"%s\" has no server", path,
                      cluster_name);
        goto out;
    }

    /* the folder of the file, for relative paths */
    dir = strdup(path);
    if (!dir) {
        rc = -ENOMEM;
        goto out;
    }
    char *slash = strrchr(dir, '/');
    if (slash)
        *(slash == dir ? slash + 1 : slash) = '\0';
    else {
        free(dir);
        dir = NULL;
    }

    struct {
        yaml_node_t *node;
        const char *data_key;
        const char *file_key;
        char **data;
        size_t *len;
        char **file;
    } pem[] = {
            {cluster, "certificate-authority-data", "certificate-authority", &ca, &ca_len,
             &ca_file},
            {user, "client-certificate-data", "client-certificate", &cert, &cert_len, &cert_file},
            {user, "client-key-data", "client-key", &key, &key_len, &key_file},
    };
    for (size_t i = 0; i < sizeof(pem) / sizeof(pem[0]); i++) {
        const char *d = map_str(&doc, pem[i].node, pem[i].data_key);
        const char *fp = map_str(&doc, pem[i].node, pem[i].file_key);
        if (d) {
            int brc = b64decode(d, pem[i].data, pem[i].len);
            if (brc) {
                pc__kube_errf(err, errlen, "kubeconfig %s: %s is not valid base64", path,
                              pem[i].data_key);
                rc = brc;
                goto out;
            }
        } else if (fp && !(*pem[i].file = resolve(dir, fp))) {
            rc = -ENOMEM;
            goto out;
        }
    }
    const char *tf = map_str(&doc, user, "tokenFile");
    if (tf && !(token_file = resolve(dir, tf))) {
        rc = -ENOMEM;
        goto out;
    }

    pc_kube_options o;
    if (tuning)
        o = *tuning;
    else
        memset(&o, 0, sizeof(o));
    o.server = server;
    o.ca_file = ca_file;
    o.ca_pem = ca;
    o.ca_pem_len = ca_len;
    o.client_cert_file = cert_file;
    o.client_key_file = key_file;
    o.client_cert_pem = cert;
    o.client_cert_pem_len = cert_len;
    o.client_key_pem = key;
    o.client_key_pem_len = key_len;
    o.token = map_str(&doc, user, "token");
    o.token_file = token_file;
    o.insecure_skip_tls_verify = truthy(map_str(&doc, cluster, "insecure-skip-tls-verify"));
    o.tls_server_name = map_str(&doc, cluster, "tls-server-name");
    o.proxy_url = map_str(&doc, cluster, "proxy-url");
    o.default_namespace = ns;
    rc = pc_kube_client_new(&o, out, err, errlen);
    /* The client has its own copies: wipe the secrets in the YAML document before libyaml
     * frees it. (libyaml's parser buffers held them too and are freed as they are: libyaml
     * has no allocator hook. Prefer tokenFile over an inline token.) */
    wipe_scalar(map_get(&doc, user, "token"));
    wipe_scalar(map_get(&doc, user, "client-key-data"));

out:
    if (have_doc)
        yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    fclose(f);
    if (key) {
        explicit_bzero(key, key_len);
        free(key);
    }
    free(ca);
    free(cert);
    free(dir);
    free(ca_file);
    free(cert_file);
    free(key_file);
    free(token_file);
    return rc;
}

int pc_kube_client_new_in_cluster(const char *sa_dir, const pc_kube_options *tuning,
                                  pc_kube_client **out, char *err, size_t errlen)
{
    if (!sa_dir)
        sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount";
    const char *host = getenv("KUBERNETES_SERVICE_HOST");
    const char *port = getenv("KUBERNETES_SERVICE_PORT");
    if (!host || !host[0] || !port || !port[0]) {
        pc__kube_errf(err, errlen,
                      "in-cluster config: KUBERNETES_SERVICE_HOST/PORT not set "
                      "(not running in a pod)");
        return -ENOENT;
    }
    char server[512], ca[4096], token[4096], nsfile[4096];
    /* an IPv6 service address needs brackets in a URL */
    snprintf(server, sizeof(server), strchr(host, ':') ? "https://[%s]:%s" : "https://%s:%s", host,
             port);
    snprintf(ca, sizeof(ca), "%s/ca.crt", sa_dir);
    snprintf(token, sizeof(token), "%s/token", sa_dir);
    snprintf(nsfile, sizeof(nsfile), "%s/namespace", sa_dir);
    FILE *t = fopen(token, "rb");
    if (!t) {
        int e = errno;
        pc__kube_errf(err, errlen, "in-cluster config: token %s: %s", token, strerror(e));
        return -ENOENT;
    }
    fclose(t);
    char ns[PC_NAMESPACE_MAX] = "default";
    FILE *nf = fopen(nsfile, "rb");
    if (nf) {
        if (fgets(ns, sizeof(ns), nf)) {
            ns[strcspn(ns, " \r\n\t")] = '\0';
            if (!ns[0])
                snprintf(ns, sizeof(ns), "default");
        }
        fclose(nf);
    }
    pc_kube_options o;
    if (tuning)
        o = *tuning;
    else
        memset(&o, 0, sizeof(o));
    o.server = server;
    o.ca_file = ca;
    o.ca_pem = NULL;
    o.client_cert_file = o.client_key_file = NULL;
    o.client_cert_pem = o.client_key_pem = NULL;
    o.token = NULL;
    o.token_file = token;
    o.insecure_skip_tls_verify = false;
    o.default_namespace = ns;
    return pc_kube_client_new(&o, out, err, errlen);
}
