/* libFuzzer target: common/'s SHA-1 agrees with OpenSSL's on any input, whole or cut
 * in two at a point the input chooses. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "common/sha1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t md[SHA1_LEN], ref[EVP_MAX_MD_SIZE];
    unsigned int ref_len = 0;
    size_t cut = size > 0 ? data[0] % (size + 1) : 0;
    struct sha1 s;

    if (EVP_Digest(data, size, ref, &ref_len, EVP_sha1(), NULL) != 1 || ref_len != SHA1_LEN)
        abort();
    sha1_init(&s);
    sha1_update(&s, data, size);
    sha1_final(&s, md);
    if (memcmp(md, ref, SHA1_LEN) != 0)
        abort();
    sha1_init(&s);
    sha1_update(&s, data, cut);
    sha1_update(&s, data + cut, size - cut);
    sha1_final(&s, md);
    if (memcmp(md, ref, SHA1_LEN) != 0)
        abort();
    return 0;
}
