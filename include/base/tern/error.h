/* tern error convention: functions return 0 (TERN_OK) or a positive TERN_E* code,
 * and may fill a caller-owned message buffer of TERN_ERRMSG_SIZE bytes.
 * libuv's negative codes are translated at the boundary (tern_err_from_uv). */
#ifndef TERN_ERROR_H
#define TERN_ERROR_H

#define TERN_ERRMSG_SIZE 256

enum tern_err {
    TERN_OK = 0,
    TERN_EAGAIN = 1,      /* not enough input yet / try again later */
    TERN_ENOMEM = 2,      /* allocation failed */
    TERN_EMALFORMED = 3,  /* bytes do not form a valid packet or record */
    TERN_EPROTO = 4,      /* well formed but violates the protocol */
    TERN_ETOOBIG = 5,     /* exceeds a configured or protocol size limit */
    TERN_EINVAL = 6,      /* bad argument or configuration value */
    TERN_ENOTFOUND = 7,   /* no such session, topic, key ... */
    TERN_ELIMIT = 8,      /* a configured bound was hit */
    TERN_EIO = 9,         /* file or socket I/O failed */
    TERN_ECORRUPT = 10,   /* checksum or format check failed on read */
    TERN_ESTALE = 11,     /* epoch fencing: the caller no longer owns the session */
    TERN_ENOTLEADER = 12, /* proposal needs the leader */
    TERN_ESHUTDOWN = 13,  /* component is closing */
    TERN_EUNSUPPORTED = 14,
};

/* A short static name for an error code ("malformed", "too big", ...). */
const char *tern_strerror(int err);

#endif
