/* _dl_find_object for a static musl program built by dist/build.sh with nightly
 * -Z build-std. Debian's cross gcc's unwinder (libgcc_eh, which stands in for libunwind
 * there) was built against glibc 2.35 or later and finds a return address's unwind
 * table with glibc's _dl_find_object, which musl does not have. This answers the same
 * question from musl's dl_iterate_phdr: the loaded object holding the address, and its
 * PT_GNU_EH_FRAME. Only backtraces use it (the release profile aborts on panic).
 * Compiled with the cross gcc against Debian's glibc headers, whose struct
 * dl_phdr_info starts with the same four fields as musl's. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stdint.h>
#include <string.h>

struct query {
    uintptr_t pc;
    struct dl_find_object *result;
    int found;
};

static int visit(struct dl_phdr_info *info, size_t size, void *data)
{
    struct query *q = data;
    const ElfW(Phdr) *eh_frame = NULL;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    int holds_pc = 0;
    (void)size;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t start = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD) {
            if (q->pc >= start && q->pc - start < ph->p_memsz)
                holds_pc = 1;
            if (start < lo)
                lo = start;
            if (start + ph->p_memsz > hi)
                hi = start + ph->p_memsz;
        } else if (ph->p_type == PT_GNU_EH_FRAME) {
            eh_frame = ph;
        }
    }
    if (!holds_pc || eh_frame == NULL)
        return 0;
    memset(q->result, 0, sizeof *q->result);
    q->result->dlfo_map_start = (void *)lo;
    q->result->dlfo_map_end = (void *)hi;
    q->result->dlfo_eh_frame = (void *)(info->dlpi_addr + eh_frame->p_vaddr);
    q->found = 1;
    return 1;
}

int _dl_find_object(void *pc, struct dl_find_object *result)
{
    struct query q = { (uintptr_t)pc, result, 0 };
    dl_iterate_phdr(visit, &q);
    return q.found ? 0 : -1;
}
