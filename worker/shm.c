#include "worker/shm.h"

#include <sys/mman.h>

struct shm *shm_create(int n)
{
    size_t size = sizeof(struct shm) + (size_t)n * sizeof(struct shm_worker);
    struct shm *s = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

    if (s == MAP_FAILED)
        return NULL;
    s->nworkers = n;
    return s;
}
