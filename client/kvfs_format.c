/* kvfs_format: the block file format and the layout it records.
 *
 * Header (little-endian, KVFS_HEADER_SIZE bytes, zero-padded so that the
 * payload starts page-aligned for direct I/O):
 *   0  magic "KVFSBLK\0"       8  version (u32)     12 header size (u32)
 *   16 layout: layers, block tokens, heads, head size, dtype, blocks per file (6 x u32)
 *   40 reserved (u32)          44 reserved (u32)
 *   48 payload length (u64)    56 payload xxh3-64 (u64)
 *   64 xxh3-64 of bytes 0..63 (u64)
 * The header's own checksum makes a torn or scribbled header a format error
 * rather than a misread layout. */
#include "kvfs_client.h"
#include "kvfs_hash.h"

#include <errno.h>
#include <string.h>
#include <xxhash.h>

static const char magic[8] = {'K', 'V', 'F', 'S', 'B', 'L', 'K', '\0'};

size_t kvfs_dtype_size(uint32_t dtype) {
    switch (dtype) {
    case KVFS_DTYPE_FP16:
    case KVFS_DTYPE_BF16:
        return 2;
    case KVFS_DTYPE_FP8_E4M3:
    case KVFS_DTYPE_FP8_E5M2:
        return 1;
    case KVFS_DTYPE_FP32:
        return 4;
    default:
        return 0;
    }
}

size_t kvfs_layout_chunk_bytes(const struct kvfs_layout *l) {
    return (size_t)l->block_tokens * l->num_heads * l->head_size * kvfs_dtype_size(l->dtype);
}

size_t kvfs_layout_payload_bytes(const struct kvfs_layout *l) {
    return kvfs_layout_chunk_bytes(l) * 2 * l->num_layers * l->blocks_per_file;
}

int kvfs_layout_check(const struct kvfs_layout *l) {
    if (!l->num_layers || !l->block_tokens || !l->num_heads || !l->head_size ||
        !l->blocks_per_file || !kvfs_dtype_size(l->dtype))
        return -EINVAL;
    /* Each factor below 2^16 keeps the product far from overflow. */
    if (l->num_layers > 65535 || l->block_tokens > 65535 || l->num_heads > 65535 ||
        l->head_size > 65535 || l->blocks_per_file > 65535)
        return -EINVAL;
    if (kvfs_layout_payload_bytes(l) > ((size_t)1 << 36))
        return -EINVAL;
    return 0;
}

static void put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}

static uint64_t get64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

void kvfs_header_encode(void *buf, const struct kvfs_layout *l, uint64_t payload_len,
                        uint64_t payload_xxh3) {
    unsigned char *p = buf;
    memset(p, 0, KVFS_HEADER_SIZE);
    memcpy(p, magic, 8);
    put32(p + 8, KVFS_FORMAT_VERSION);
    put32(p + 12, KVFS_HEADER_SIZE);
    put32(p + 16, l->num_layers);
    put32(p + 20, l->block_tokens);
    put32(p + 24, l->num_heads);
    put32(p + 28, l->head_size);
    put32(p + 32, l->dtype);
    put32(p + 36, l->blocks_per_file);
    put64(p + 48, payload_len);
    put64(p + 56, payload_xxh3);
    put64(p + 64, XXH3_64bits(p, 64));
}

int kvfs_header_check(const void *buf, size_t len, const struct kvfs_layout *want,
                      uint64_t *payload_len, uint64_t *payload_xxh3) {
    const unsigned char *p = buf;
    if (len < 72 || memcmp(p, magic, 8) != 0 || get64(p + 64) != XXH3_64bits(p, 64))
        return KVFS_E_FORMAT;
    if (get32(p + 8) != KVFS_FORMAT_VERSION || get32(p + 12) != KVFS_HEADER_SIZE)
        return KVFS_E_FORMAT;
    struct kvfs_layout got = {get32(p + 16), get32(p + 20), get32(p + 24),
                              get32(p + 28), get32(p + 32), get32(p + 36)};
    if (memcmp(&got, want, sizeof(got)) != 0)
        return KVFS_E_LAYOUT;
    uint64_t plen = get64(p + 48);
    if (plen != kvfs_layout_payload_bytes(want))
        return KVFS_E_FORMAT;
    *payload_len = plen;
    *payload_xxh3 = get64(p + 56);
    return 0;
}

int kvfs_block_verify(const void *buf, size_t len, const struct kvfs_layout *want) {
    uint64_t plen, sum;
    if (len < KVFS_HEADER_SIZE) /* cut inside the header, or not a block at all */
        return len >= sizeof(magic) && memcmp(buf, magic, sizeof(magic)) != 0 ? KVFS_E_FORMAT
                                                                              : KVFS_E_SHORT;
    int rc = kvfs_header_check(buf, len, want, &plen, &sum);
    if (rc)
        return rc;
    if (len < KVFS_HEADER_SIZE + plen)
        return KVFS_E_SHORT;
    if (len > KVFS_HEADER_SIZE + plen)
        return KVFS_E_CORRUPT;
    struct kvfs_hash h;
    kvfs_hash_reset(&h);
    kvfs_hash_update(&h, (const char *)buf + KVFS_HEADER_SIZE, plen);
    if (kvfs_hash_digest(&h) != sum)
        return KVFS_E_CORRUPT;
    return 0;
}

const char *kvfs_strerror(int err) {
    switch (err) {
    case 0:
        return "success";
    case KVFS_E_SHORT:
        return "block file is shorter than its header says";
    case KVFS_E_CORRUPT:
        return "block payload does not match its checksum";
    case KVFS_E_LAYOUT:
        return "block was written with a different layout";
    case KVFS_E_FORMAT:
        return "not a kvfs block file, or written by a newer format";
    case KVFS_E_DROPPED:
        return "store dropped: the store queue was full";
    case KVFS_E_CANCELLED:
        return "operation cancelled";
    case KVFS_E_COPY:
        return "device copy failed";
    default:
        return err < 0 ? strerror(-err) : "unknown result";
    }
}
