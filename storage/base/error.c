/* Names for the TERN_E* codes of tern/error.h. */
#include "tern/error.h"

const char *tern_strerror(int err)
{
    /* A switch, not an array: the compiler then checks every enumerator is named
     * (-Wswitch) and unknown values fall through to one answer. */
    switch ((enum tern_err)err) {
    case TERN_OK:
        return "ok";
    case TERN_EAGAIN:
        return "try again";
    case TERN_ENOMEM:
        return "out of memory";
    case TERN_EMALFORMED:
        return "malformed";
    case TERN_EPROTO:
        return "protocol error";
    case TERN_ETOOBIG:
        return "too big";
    case TERN_EINVAL:
        return "invalid argument";
    case TERN_ENOTFOUND:
        return "not found";
    case TERN_ELIMIT:
        return "limit reached";
    case TERN_EIO:
        return "I/O error";
    case TERN_ECORRUPT:
        return "corrupt data";
    case TERN_ESTALE:
        return "stale epoch";
    case TERN_ENOTLEADER:
        return "not the leader";
    case TERN_ESHUTDOWN:
        return "shutting down";
    case TERN_EUNSUPPORTED:
        return "unsupported";
    }
    return "unknown error";
}
