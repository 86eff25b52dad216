/*
 * capi_peer: a small CryptoAPI (advapi32) peer for keyblob's interoperability tests.
 *
 * Built with mingw-w64 and run under Wine (see README.md next to this file); it would run
 * unchanged on Windows. Every blob, signature, plaintext and ciphertext is a raw binary file,
 * byte for byte what CryptoAPI reads or writes; an IV is a hex string argument.
 *
 * Exit status: 0 done; 1 any other failure; 2 usage; 3 signature refused
 * (CryptVerifySignature failed); 4 CryptDecrypt refused the data (padding); 5 CryptImportKey
 * refused a SIMPLEBLOB. On failure one line on stderr names the call and GetLastError().
 *
 * Keys live only in CRYPT_VERIFYCONTEXT contexts: nothing is persisted in the Wine prefix.
 * A PUBLICKEYBLOB of an exchange key lands in the exchange slot of the context it is imported
 * into, so every command keeps signer keys and exchange keys in separate contexts.
 */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#include <wincrypt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    RC_OK = 0,
    RC_FAIL = 1,
    RC_USAGE = 2,
    RC_BADSIG = 3,
    RC_BADDECRYPT = 4,
    RC_BADIMPORT = 5,
};

#define MAX_FILE (64u * 1024u * 1024u)
#define MAX_PAD 64u /* room for the final padding block (largest block is 16 bytes) */

typedef struct {
    BYTE *p;
    DWORD n;
} buf_t;

typedef struct {
    const char *name;
    ALG_ID alg;
    DWORD block; /* 0 for the stream cipher */
} alg_t;

static const alg_t SESSION_ALGS[] = {
    {"aes128", CALG_AES_128, 16}, {"aes192", CALG_AES_192, 16},
    {"aes256", CALG_AES_256, 16}, {"3des", CALG_3DES, 8},
    {"3des112", CALG_3DES_112, 8}, {"des", CALG_DES, 8},
    {"rc2", CALG_RC2, 8},         {"rc4", CALG_RC4, 0},
};

static const alg_t HASH_ALGS[] = {
    {"md5", CALG_MD5, 0},         {"sha1", CALG_SHA1, 0},
    {"sha256", CALG_SHA_256, 0},  {"sha384", CALG_SHA_384, 0},
    {"sha512", CALG_SHA_512, 0},
};

/* Report a failed call with the GetLastError() value captured right after it. */
static int fail_code(int rc, const char *what, DWORD err)
{
    fprintf(stderr, "capi_peer: %s failed: error 0x%08lx\n", what, (unsigned long)err);
    return rc;
}

#define FAIL(rc, what) fail_code((rc), (what), GetLastError())

static int usage_error(const char *msg, const char *arg)
{
    fprintf(stderr, "capi_peer: usage: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
    return RC_USAGE;
}

static const alg_t *find_alg(const alg_t *table, size_t count, const char *name)
{
    for (size_t i = 0; i < count; i++)
        if (strcmp(table[i].name, name) == 0)
            return &table[i];
    return NULL;
}

/* HASHALG is a name from HASH_ALGS, optionally with ":nooid" for CRYPT_NOHASHOID. */
static int parse_hash(const char *arg, ALG_ID *alg, DWORD *flags)
{
    char name[16];
    const char *colon = strchr(arg, ':');
    size_t len = colon ? (size_t)(colon - arg) : strlen(arg);
    const alg_t *a;

    *flags = 0;
    if (len >= sizeof(name))
        return 0;
    memcpy(name, arg, len);
    name[len] = '\0';
    if (colon) {
        if (strcmp(colon, ":nooid") != 0)
            return 0;
        *flags = CRYPT_NOHASHOID;
    }
    a = find_alg(HASH_ALGS, sizeof(HASH_ALGS) / sizeof(HASH_ALGS[0]), name);
    if (!a)
        return 0;
    *alg = a->alg;
    return 1;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decode hex into out (at most cap bytes); returns the length or -1. */
static int parse_hex(const char *s, BYTE *out, size_t cap)
{
    size_t len = strlen(s);
    if (len == 0 || len % 2 != 0 || len / 2 > cap)
        return -1;
    for (size_t i = 0; i < len / 2; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (BYTE)(hi << 4 | lo);
    }
    return (int)(len / 2);
}

static void buf_free(buf_t *b)
{
    if (b->p) {
        SecureZeroMemory(b->p, b->n);
        free(b->p);
    }
    b->p = NULL;
    b->n = 0;
}

/* Read a whole file (at most MAX_FILE bytes) into b->p, with `extra` spare bytes after it. */
static int read_file(const char *path, buf_t *b, DWORD extra)
{
    FILE *f = fopen(path, "rb");
    long size;
    int ok = 0;

    b->p = NULL;
    b->n = 0;
    if (!f) {
        fprintf(stderr, "capi_peer: cannot open %s\n", path);
        return 0;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || (unsigned long)size > MAX_FILE ||
        fseek(f, 0, SEEK_SET) != 0) {
        fprintf(stderr, "capi_peer: cannot size %s (or it is over %u bytes)\n", path, MAX_FILE);
        goto done;
    }
    b->p = malloc((size_t)size + extra + 1);
    if (!b->p) {
        fprintf(stderr, "capi_peer: out of memory reading %s\n", path);
        goto done;
    }
    if (fread(b->p, 1, (size_t)size, f) != (size_t)size) {
        fprintf(stderr, "capi_peer: cannot read %s\n", path);
        free(b->p);
        b->p = NULL;
        goto done;
    }
    b->n = (DWORD)size;
    ok = 1;
done:
    fclose(f);
    return ok;
}

static int write_file(const char *path, const BYTE *p, DWORD n)
{
    FILE *f = fopen(path, "wb");
    int ok;

    if (!f) {
        fprintf(stderr, "capi_peer: cannot create %s\n", path);
        return 0;
    }
    ok = fwrite(p, 1, n, f) == n;
    ok = (fclose(f) == 0) && ok;
    if (!ok) {
        fprintf(stderr, "capi_peer: cannot write %s\n", path);
        remove(path);
    }
    return ok;
}

static int acquire(HCRYPTPROV *prov)
{
    if (!CryptAcquireContextA(prov, NULL, MS_ENH_RSA_AES_PROV_A, PROV_RSA_AES,
                              CRYPT_VERIFYCONTEXT)) {
        *prov = 0;
        return 0;
    }
    return 1;
}

static void release(HCRYPTPROV *prov, HCRYPTKEY *keys, size_t nkeys, HCRYPTHASH *hash)
{
    if (hash && *hash)
        CryptDestroyHash(*hash);
    for (size_t i = 0; i < nkeys; i++)
        if (keys[i])
            CryptDestroyKey(keys[i]);
    if (prov && *prov)
        CryptReleaseContext(*prov, 0);
}

/* Export a key as `type` (under `wrap` for a SIMPLEBLOB) into a file. */
static int export_to_file(HCRYPTKEY key, HCRYPTKEY wrap, DWORD type, const char *path)
{
    DWORD len = 0;
    buf_t b = {NULL, 0};
    int rc = RC_FAIL;

    if (!CryptExportKey(key, wrap, type, 0, NULL, &len))
        return FAIL(RC_FAIL, "CryptExportKey (size)");
    b.p = malloc(len ? len : 1);
    if (!b.p)
        return fail_code(RC_FAIL, "malloc", 0);
    b.n = len;
    if (!CryptExportKey(key, wrap, type, 0, b.p, &b.n)) {
        rc = FAIL(RC_FAIL, "CryptExportKey");
        goto done;
    }
    rc = write_file(path, b.p, b.n) ? RC_OK : RC_FAIL;
done:
    buf_free(&b);
    return rc;
}

/* Import a key blob file into `prov` (exportable); `on_fail` is the exit status if refused. */
static int import_file(HCRYPTPROV prov, const char *path, HCRYPTKEY wrap, HCRYPTKEY *key,
                       int on_fail, const char *what)
{
    buf_t b;
    int rc = RC_OK;

    if (!read_file(path, &b, 0))
        return RC_FAIL;
    if (!CryptImportKey(prov, b.p, b.n, wrap, CRYPT_EXPORTABLE, key)) {
        *key = 0;
        rc = FAIL(on_fail, what);
    }
    buf_free(&b);
    return rc;
}

/* The slot (AT_KEYEXCHANGE or AT_SIGNATURE) an imported RSA private key landed in. */
static int key_spec(HCRYPTKEY key, DWORD *spec)
{
    ALG_ID alg = 0;
    DWORD len = sizeof(alg);

    if (!CryptGetKeyParam(key, KP_ALGID, (BYTE *)&alg, &len, 0))
        return FAIL(RC_FAIL, "CryptGetKeyParam(KP_ALGID)");
    if (alg == CALG_RSA_KEYX)
        *spec = AT_KEYEXCHANGE;
    else if (alg == CALG_RSA_SIGN)
        *spec = AT_SIGNATURE;
    else
        return fail_code(RC_FAIL, "private key ALG_ID check", alg);
    return RC_OK;
}

static int hash_data(HCRYPTPROV prov, ALG_ID alg, const buf_t *data, HCRYPTHASH *hash)
{
    if (!CryptCreateHash(prov, alg, 0, 0, hash)) {
        *hash = 0;
        return FAIL(RC_FAIL, "CryptCreateHash");
    }
    if (!CryptHashData(*hash, data->p, data->n, 0))
        return FAIL(RC_FAIL, "CryptHashData");
    return RC_OK;
}

/* Sign the contents of data_path with the private key in priv_path; write the signature. */
static int do_sign(const char *priv_path, const char *hash_arg, const char *data_path,
                   const char *sig_path)
{
    HCRYPTPROV prov = 0;
    HCRYPTKEY key = 0;
    HCRYPTHASH hash = 0;
    buf_t data = {NULL, 0}, sig = {NULL, 0};
    ALG_ID halg;
    DWORD flags, spec = 0, len = 0;
    int rc;

    if (!parse_hash(hash_arg, &halg, &flags))
        return usage_error("unknown hash algorithm", hash_arg);
    if (!acquire(&prov))
        return FAIL(RC_FAIL, "CryptAcquireContext");
    if ((rc = import_file(prov, priv_path, 0, &key, RC_FAIL, "CryptImportKey(PRIVATEKEYBLOB)")))
        goto done;
    if ((rc = key_spec(key, &spec)))
        goto done;
    rc = RC_FAIL;
    if (!read_file(data_path, &data, 0))
        goto done;
    if ((rc = hash_data(prov, halg, &data, &hash)))
        goto done;
    if (!CryptSignHashA(hash, spec, NULL, flags, NULL, &len)) {
        rc = FAIL(RC_FAIL, "CryptSignHash (size)");
        goto done;
    }
    sig.p = malloc(len ? len : 1);
    if (!sig.p) {
        rc = fail_code(RC_FAIL, "malloc", 0);
        goto done;
    }
    sig.n = len;
    if (!CryptSignHashA(hash, spec, NULL, flags, sig.p, &sig.n)) {
        rc = FAIL(RC_FAIL, "CryptSignHash");
        goto done;
    }
    rc = write_file(sig_path, sig.p, sig.n) ? RC_OK : RC_FAIL;
done:
    buf_free(&data);
    buf_free(&sig);
    release(&prov, &key, 1, &hash);
    return rc;
}

/* Verify a CryptSignHash signature over a file's bytes with a PUBLICKEYBLOB; 3 if refused. */
static int do_verify(const char *pub_path, const char *hash_arg, const char *data_path,
                     const char *sig_path)
{
    HCRYPTPROV prov = 0;
    HCRYPTKEY key = 0;
    HCRYPTHASH hash = 0;
    buf_t data = {NULL, 0}, sig = {NULL, 0};
    ALG_ID halg;
    DWORD flags;
    int rc;

    if (!parse_hash(hash_arg, &halg, &flags))
        return usage_error("unknown hash algorithm", hash_arg);
    if (!acquire(&prov))
        return FAIL(RC_FAIL, "CryptAcquireContext");
    if ((rc = import_file(prov, pub_path, 0, &key, RC_FAIL, "CryptImportKey(PUBLICKEYBLOB)")))
        goto done;
    rc = RC_FAIL;
    if (!read_file(data_path, &data, 0) || !read_file(sig_path, &sig, 0))
        goto done;
    if ((rc = hash_data(prov, halg, &data, &hash)))
        goto done;
    if (!CryptVerifySignatureA(hash, sig.p, sig.n, key, NULL, flags)) {
        rc = FAIL(RC_BADSIG, "CryptVerifySignature");
        goto done;
    }
    rc = RC_OK;
done:
    buf_free(&data);
    buf_free(&sig);
    release(&prov, &key, 1, &hash);
    return rc;
}

static int set_iv(HCRYPTKEY key, const char *iv_hex)
{
    BYTE iv[32] = {0};
    DWORD bits = 0, len = sizeof(bits);
    int n;

    if (!iv_hex)
        return RC_OK;
    /* CryptSetKeyParam(KP_IV) reads one block from the buffer, whatever we hand it. */
    if (!CryptGetKeyParam(key, KP_BLOCKLEN, (BYTE *)&bits, &len, 0))
        return FAIL(RC_FAIL, "CryptGetKeyParam(KP_BLOCKLEN)");
    n = parse_hex(iv_hex, iv, sizeof(iv));
    if (bits == 0)
        return usage_error("a stream cipher takes no IV", iv_hex);
    if (n < 0 || (DWORD)n != bits / 8)
        return usage_error("IV must be hex, exactly one block long", iv_hex);
    if (!CryptSetKeyParam(key, KP_IV, iv, 0))
        return FAIL(RC_FAIL, "CryptSetKeyParam(KP_IV)");
    return RC_OK;
}

/* One CryptEncrypt/CryptDecrypt call with Final=TRUE over a whole file. */
static int crypt_file(HCRYPTKEY key, int encrypt, const char *in_path, const char *out_path)
{
    buf_t data;
    DWORD len;
    int rc = RC_OK;

    if (!read_file(in_path, &data, MAX_PAD))
        return RC_FAIL;
    len = data.n;
    if (encrypt) {
        if (!CryptEncrypt(key, 0, TRUE, 0, data.p, &len, data.n + MAX_PAD))
            rc = FAIL(RC_FAIL, "CryptEncrypt");
    } else if (!CryptDecrypt(key, 0, TRUE, 0, data.p, &len)) {
        rc = FAIL(RC_BADDECRYPT, "CryptDecrypt");
    }
    if (rc == RC_OK && !write_file(out_path, data.p, len))
        rc = RC_FAIL;
    data.n += MAX_PAD; /* wipe the spare bytes too */
    buf_free(&data);
    return rc;
}

static int do_crypt(int encrypt, const char *keyblob_path, const char *in_path,
                    const char *out_path, const char *iv_hex)
{
    HCRYPTPROV prov = 0;
    HCRYPTKEY key = 0;
    int rc;

    if (!acquire(&prov))
        return FAIL(RC_FAIL, "CryptAcquireContext");
    if ((rc = import_file(prov, keyblob_path, 0, &key, RC_FAIL,
                          "CryptImportKey(PLAINTEXTKEYBLOB)")))
        goto done;
    if ((rc = set_iv(key, iv_hex)))
        goto done;
    rc = crypt_file(key, encrypt, in_path, out_path);
done:
    release(&prov, &key, 1, NULL);
    return rc;
}

static int do_genkeypair(const char *exch_path, const char *sign_path, const char *bits_arg)
{
    HCRYPTPROV prov = 0;
    HCRYPTKEY keys[2] = {0, 0};
    DWORD bits = 2048;
    int rc;

    if (bits_arg) {
        char *end;
        unsigned long v = strtoul(bits_arg, &end, 10);
        if (*end != '\0' || v < 384 || v > 16384 || v % 8 != 0)
            return usage_error("BITS must be a multiple of 8 in 384..16384", bits_arg);
        bits = (DWORD)v;
    }
    if (!acquire(&prov))
        return FAIL(RC_FAIL, "CryptAcquireContext");
    rc = RC_FAIL;
    if (!CryptGenKey(prov, AT_KEYEXCHANGE, (bits << 16) | CRYPT_EXPORTABLE, &keys[0])) {
        rc = FAIL(RC_FAIL, "CryptGenKey(AT_KEYEXCHANGE)");
        goto done;
    }
    if (!CryptGenKey(prov, AT_SIGNATURE, (bits << 16) | CRYPT_EXPORTABLE, &keys[1])) {
        rc = FAIL(RC_FAIL, "CryptGenKey(AT_SIGNATURE)");
        goto done;
    }
    if ((rc = export_to_file(keys[0], 0, PRIVATEKEYBLOB, exch_path)))
        goto done;
    rc = export_to_file(keys[1], 0, PRIVATEKEYBLOB, sign_path);
done:
    release(&prov, keys, 2, NULL);
    return rc;
}

static int do_export_public(const char *priv_path, const char *pub_path)
{
    HCRYPTPROV prov = 0;
    HCRYPTKEY key = 0;
    int rc;

    if (!acquire(&prov))
        return FAIL(RC_FAIL, "CryptAcquireContext");
    if ((rc = import_file(prov, priv_path, 0, &key, RC_FAIL, "CryptImportKey(PRIVATEKEYBLOB)")))
        goto done;
    rc = export_to_file(key, 0, PUBLICKEYBLOB, pub_path);
done:
    release(&prov, &key, 1, NULL);
    return rc;
}

static int gen_session(HCRYPTPROV prov, const char *alg_arg, HCRYPTKEY *key, const alg_t **out)
{
    const alg_t *a = find_alg(SESSION_ALGS, sizeof(SESSION_ALGS) / sizeof(SESSION_ALGS[0]),
                              alg_arg);
    if (!a)
        return usage_error("unknown session key algorithm", alg_arg);
    if (!CryptGenKey(prov, a->alg, CRYPT_EXPORTABLE, key)) {
        *key = 0;
        return FAIL(RC_FAIL, "CryptGenKey(session key)");
    }
    if (out)
        *out = a;
    return RC_OK;
}

static int do_gen_session(const char *alg_arg, const char *out_path)
{
    HCRYPTPROV prov = 0;
    HCRYPTKEY key = 0;
    int rc;

    if (!acquire(&prov))
        return FAIL(RC_FAIL, "CryptAcquireContext");
    if ((rc = gen_session(prov, alg_arg, &key, NULL)))
        goto done;
    rc = export_to_file(key, 0, PLAINTEXTKEYBLOB, out_path);
done:
    release(&prov, &key, 1, NULL);
    return rc;
}

static int do_wrap(const char *plain_path, const char *pub_path, const char *out_path)
{
    HCRYPTPROV prov = 0;
    HCRYPTKEY keys[2] = {0, 0};
    int rc;

    if (!acquire(&prov))
        return FAIL(RC_FAIL, "CryptAcquireContext");
    if ((rc = import_file(prov, pub_path, 0, &keys[0], RC_FAIL, "CryptImportKey(PUBLICKEYBLOB)")))
        goto done;
    if ((rc = import_file(prov, plain_path, 0, &keys[1], RC_FAIL,
                          "CryptImportKey(PLAINTEXTKEYBLOB)")))
        goto done;
    rc = export_to_file(keys[1], keys[0], SIMPLEBLOB, out_path);
done:
    release(&prov, keys, 2, NULL);
    return rc;
}

static int do_unwrap(const char *priv_path, const char *simple_path, const char *out_path)
{
    HCRYPTPROV prov = 0;
    HCRYPTKEY keys[2] = {0, 0};
    int rc;

    if (!acquire(&prov))
        return FAIL(RC_FAIL, "CryptAcquireContext");
    if ((rc = import_file(prov, priv_path, 0, &keys[0], RC_FAIL,
                          "CryptImportKey(PRIVATEKEYBLOB)")))
        goto done;
    if ((rc = import_file(prov, simple_path, keys[0], &keys[1], RC_BADIMPORT,
                          "CryptImportKey(SIMPLEBLOB)")))
        goto done;
    rc = export_to_file(keys[1], 0, PLAINTEXTKEYBLOB, out_path);
done:
    release(&prov, keys, 2, NULL);
    return rc;
}

/*
 * The procedure's export side: new session key, SIMPLEBLOB under the recipient's exchange
 * public key, CryptSignHash over the SIMPLEBLOB file bytes, and a message encrypted with it.
 */
static int do_make_session(char **a, const char *iv_hex)
{
    const char *alg_arg = a[0], *pub_path = a[1], *sign_path = a[2], *hash_arg = a[3];
    const char *simple_path = a[4], *sig_path = a[5], *in_path = a[6], *out_path = a[7];
    HCRYPTPROV prov = 0;
    HCRYPTKEY keys[2] = {0, 0}; /* recipient public key, session key */
    ALG_ID halg;
    DWORD flags;
    int rc;

    if (!parse_hash(hash_arg, &halg, &flags))
        return usage_error("unknown hash algorithm", hash_arg);
    if (!acquire(&prov))
        return FAIL(RC_FAIL, "CryptAcquireContext");
    if ((rc = import_file(prov, pub_path, 0, &keys[0], RC_FAIL, "CryptImportKey(PUBLICKEYBLOB)")))
        goto done;
    if ((rc = gen_session(prov, alg_arg, &keys[1], NULL)))
        goto done;
    if ((rc = export_to_file(keys[1], keys[0], SIMPLEBLOB, simple_path)))
        goto done;
    /* Signed in its own context (do_sign), so the signer key never meets the recipient key. */
    if ((rc = do_sign(sign_path, hash_arg, simple_path, sig_path)))
        goto done;
    if ((rc = set_iv(keys[1], iv_hex)))
        goto done;
    rc = crypt_file(keys[1], 1, in_path, out_path);
done:
    release(&prov, keys, 2, NULL);
    return rc;
}

/*
 * The procedure's import side with its cure: the signature over the SIMPLEBLOB bytes is
 * checked first, and nothing is unwrapped unless it verifies (exit 3 otherwise).
 */
static int do_open_session(char **a, const char *iv_hex)
{
    const char *priv_path = a[0], *signer_path = a[1], *hash_arg = a[2], *simple_path = a[3];
    const char *sig_path = a[4], *in_path = a[5], *out_path = a[6];
    HCRYPTPROV prov = 0;
    HCRYPTKEY keys[2] = {0, 0}; /* exchange key pair, session key */
    int rc;

    if ((rc = do_verify(signer_path, hash_arg, simple_path, sig_path)))
        return rc;
    if (!acquire(&prov))
        return FAIL(RC_FAIL, "CryptAcquireContext");
    if ((rc = import_file(prov, priv_path, 0, &keys[0], RC_FAIL,
                          "CryptImportKey(PRIVATEKEYBLOB)")))
        goto done;
    if ((rc = import_file(prov, simple_path, keys[0], &keys[1], RC_BADIMPORT,
                          "CryptImportKey(SIMPLEBLOB)")))
        goto done;
    if ((rc = set_iv(keys[1], iv_hex)))
        goto done;
    rc = crypt_file(keys[1], 0, in_path, out_path);
done:
    release(&prov, keys, 2, NULL);
    return rc;
}

/* Print the provider's algorithms: "ALG_ID default min max name", one per line. */
static int do_algs(void)
{
    HCRYPTPROV prov = 0;
    PROV_ENUMALGS_EX info;
    DWORD len, flag = CRYPT_FIRST;

    if (!acquire(&prov))
        return FAIL(RC_FAIL, "CryptAcquireContext");
    for (;;) {
        len = sizeof(info);
        if (!CryptGetProvParam(prov, PP_ENUMALGS_EX, (BYTE *)&info, &len, flag))
            break;
        flag = 0;
        info.szName[sizeof(info.szName) - 1] = '\0';
        printf("0x%04x %lu %lu %lu %s\n", (unsigned)info.aiAlgid,
               (unsigned long)info.dwDefaultLen, (unsigned long)info.dwMinLen,
               (unsigned long)info.dwMaxLen, info.szName);
    }
    if (GetLastError() != ERROR_NO_MORE_ITEMS) {
        DWORD err = GetLastError();
        CryptReleaseContext(prov, 0);
        return fail_code(RC_FAIL, "CryptGetProvParam(PP_ENUMALGS_EX)", err);
    }
    CryptReleaseContext(prov, 0);
    return fflush(stdout) == 0 ? RC_OK : RC_FAIL;
}

static const char USAGE[] =
    "usage: capi_peer COMMAND ARGS (files are raw binary; IV_HEX is hex)\n"
    "  algs\n"
    "  genkeypair OUT_EXCH_PRIVBLOB OUT_SIGN_PRIVBLOB [BITS]\n"
    "  export-public PRIVBLOB OUT_PUBBLOB\n"
    "  gen-session ALG OUT_PLAINTEXTKEYBLOB\n"
    "  wrap PLAINTEXTKEYBLOB EXCH_PUBBLOB OUT_SIMPLEBLOB\n"
    "  unwrap EXCH_PRIVBLOB SIMPLEBLOB OUT_PLAINTEXTKEYBLOB\n"
    "  sign PRIVBLOB HASHALG DATA OUT_SIG\n"
    "  verify PUBBLOB HASHALG DATA SIG\n"
    "  encrypt PLAINTEXTKEYBLOB IN OUT [IV_HEX]\n"
    "  decrypt PLAINTEXTKEYBLOB IN OUT [IV_HEX]\n"
    "  make-session ALG EXCH_PUBBLOB SIGN_PRIVBLOB HASHALG OUT_SIMPLEBLOB OUT_SIG\n"
    "               PLAINTEXT_IN CIPHERTEXT_OUT [IV_HEX]\n"
    "  open-session EXCH_PRIVBLOB SIGNER_PUBBLOB HASHALG SIMPLEBLOB SIG\n"
    "               CIPHERTEXT_IN PLAINTEXT_OUT [IV_HEX]\n"
    "ALG: aes128 aes192 aes256 3des 3des112 des rc2 rc4\n"
    "HASHALG: md5 sha1 sha256 sha384 sha512, optionally with :nooid (CRYPT_NOHASHOID)\n"
    "exit: 0 ok, 1 failure, 2 usage, 3 bad signature, 4 CryptDecrypt refused,\n"
    "      5 SIMPLEBLOB import refused\n";

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "";
    char **a = argv + 2;
    int n = argc - 2;

#define ARGS(lo, hi) (n >= (lo) && n <= (hi))
    if (strcmp(cmd, "algs") == 0 && ARGS(0, 0))
        return do_algs();
    if (strcmp(cmd, "genkeypair") == 0 && ARGS(2, 3))
        return do_genkeypair(a[0], a[1], n == 3 ? a[2] : NULL);
    if (strcmp(cmd, "export-public") == 0 && ARGS(2, 2))
        return do_export_public(a[0], a[1]);
    if (strcmp(cmd, "gen-session") == 0 && ARGS(2, 2))
        return do_gen_session(a[0], a[1]);
    if (strcmp(cmd, "wrap") == 0 && ARGS(3, 3))
        return do_wrap(a[0], a[1], a[2]);
    if (strcmp(cmd, "unwrap") == 0 && ARGS(3, 3))
        return do_unwrap(a[0], a[1], a[2]);
    if (strcmp(cmd, "sign") == 0 && ARGS(4, 4))
        return do_sign(a[0], a[1], a[2], a[3]);
    if (strcmp(cmd, "verify") == 0 && ARGS(4, 4))
        return do_verify(a[0], a[1], a[2], a[3]);
    if ((strcmp(cmd, "encrypt") == 0 || strcmp(cmd, "decrypt") == 0) && ARGS(3, 4))
        return do_crypt(cmd[0] == 'e', a[0], a[1], a[2], n == 4 ? a[3] : NULL);
    if (strcmp(cmd, "make-session") == 0 && ARGS(8, 9))
        return do_make_session(a, n == 9 ? a[8] : NULL);
    if (strcmp(cmd, "open-session") == 0 && ARGS(7, 8))
        return do_open_session(a, n == 8 ? a[7] : NULL);
#undef ARGS
    fputs(USAGE, stderr);
    return RC_USAGE;
}
