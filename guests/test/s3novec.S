/*
 * s3novec.S - s3.S without a waking vector: the RTC alarm wakes the VM and,
 * as under SeaBIOS, the wake-up becomes a reset (berth's on_reboot).
 */
#define S3_NO_VECTOR 1
#include "s3.S"
