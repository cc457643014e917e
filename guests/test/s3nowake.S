/*
 * s3nowake.S - s3.S without a wake source: no PM1_EN.RTC_EN, no RTC alarm
 * interrupt enable. berth ends the suspended VM as a power-off (exit 0).
 */
#define S3_NO_WAKE 1
#include "s3.S"
