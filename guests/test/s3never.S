/*
 * s3never.S - s3.S with an alarm that never matches (hour 0x25): the VM is
 * suspended with a wake source armed and only berth's timeout ends it.
 */
#define S3_NEVER_WAKE 1
#include "s3.S"
