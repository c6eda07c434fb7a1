/* %.9g for floats without printf: scale to 9 integer digits in double precision, round,
 * and lay the digits out as %g does. The scaling is exact up to a few rounding errors of
 * 2^-53 (under 1e-6 in the 9-digit integer); a fraction that close to one half could round
 * either way, so those rare values go to snprintf, which rounds exactly. */
#include "base/numfmt.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static const double pow10_exact[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                       1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* x * 10^s for s in [-60, 60] with at most four roundings. */
static double scale10(double x, int s)
{
    while (s > 22) {
        x *= 1e22;
        s -= 22;
    }
    while (s < -22) {
        x /= 1e22;
        s += 22;
    }
    return s >= 0 ? x * pow10_exact[s] : x / pow10_exact[-s];
}

static char *put_uint(char *p, unsigned v, int min_digits)
{
    char tmp[12];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n < min_digits)
        tmp[n++] = '0';
    while (n)
        *p++ = tmp[--n];
    return p;
}

int fs_format_g9(char *out, float xf)
{
    double x = xf;
    char *p = out;
    if (signbit(x)) {
        *p++ = '-';
        x = -x;
    }
    if (x == 0) {
        *p++ = '0';
        *p = 0;
        return (int)(p - out);
    }
    int e2;
    frexp(x, &e2); /* x in [2^(e2-1), 2^e2) */
    int k = (int)floor((e2 - 1) * 0.30102999566398120);
    double y = scale10(x, 8 - k);
    if (y >= 1e9) {
        k++;
        y = scale10(x, 8 - k);
    } else if (y < 1e8) {
        k--;
        y = scale10(x, 8 - k);
    }
    double fl = floor(y), frac = y - fl;
    if (fabs(frac - 0.5) < 1e-6 || y < 1e8 - 1 || y >= 1e9)
        return snprintf(out, FS_G9_MAX, "%.9g", (double)xf);
    uint32_t d = (uint32_t)fl + (frac > 0.5);
    if (d == 1000000000u) {
        d = 100000000u;
        k++;
    } else if (d < 100000000u) { /* y just below 1e8 rounded up into it */
        d *= 10;
        k--;
    }
    char s[9];
    for (int i = 8; i >= 0; i--, d /= 10)
        s[i] = (char)('0' + d % 10);
    int last = 8; /* last significant digit after stripping trailing zeros */
    while (last > 0 && s[last] == '0')
        last--;
    if (k < -4 || k >= 9) {
        *p++ = s[0];
        if (last > 0) {
            *p++ = '.';
            memcpy(p, s + 1, (size_t)last);
            p += last;
        }
        *p++ = 'e';
        *p++ = k < 0 ? '-' : '+';
        p = put_uint(p, (unsigned)(k < 0 ? -k : k), 2);
    } else if (k >= 0) {
        memcpy(p, s, (size_t)k + 1);
        p += k + 1;
        if (last > k) {
            *p++ = '.';
            memcpy(p, s + k + 1, (size_t)(last - k));
            p += last - k;
        }
    } else {
        *p++ = '0';
        *p++ = '.';
        for (int i = 0; i < -k - 1; i++)
            *p++ = '0';
        memcpy(p, s, (size_t)last + 1);
        p += last + 1;
    }
    *p = 0;
    return (int)(p - out);
}
