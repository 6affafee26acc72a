/* A stand-in for bcryptprimitives.dll, which Wine 8.0 does not ship and every Rust program
   built with std 1.78 or later imports (for ProcessPrng, its source of random bytes).
   Built into the Wine prefix by .ci/cross; it fills the buffer from RtlGenRandom
   (advapi32's SystemFunction036), which Wine has. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE out, SIZE_T length) {
    const SIZE_T most = 1u << 30; /* RtlGenRandom takes a ULONG length */
    while (length > 0) {
        ULONG part = (ULONG)(length < most ? length : most);
        if (!SystemFunction036(out, part)) {
            return FALSE;
        }
        out += part;
        length -= part;
    }
    return TRUE;
}
