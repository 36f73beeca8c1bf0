/*
 * Test helper of seccomp.adversarial.test.ts (x86_64): makes raw system calls, with no libc, so that
 * what the kernel answers is exactly what the filter let through. Built by the test with
 * `gcc -static -nostdlib`.
 *
 *   probe LABEL=NR,A0,A1,A2,A3,A4,A5 ...   one raw syscall each; prints "LABEL RET" (RET = -errno)
 *   probe x32                              getpid through the x32 ABI (nr | 0x40000000)
 *   probe i386                             getpid through the i386 ABI (int 0x80)
 *
 * A clone that succeeds returns 0 in the child, which exits at once.
 */
typedef unsigned long u64;

static long raw(long nr, u64 a0, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
  long ret;
  register u64 r10 __asm__("r10") = a3;
  register u64 r8 __asm__("r8") = a4;
  register u64 r9 __asm__("r9") = a5;
  __asm__ volatile("syscall"
                   : "=a"(ret)
                   : "a"(nr), "D"(a0), "S"(a1), "d"(a2), "r"(r10), "r"(r8), "r"(r9)
                   : "rcx", "r11", "memory");
  return ret;
}

static void out(const char *s, long n) { raw(1, 1, (u64)s, (u64)n, 0, 0, 0); }
static void bye(long code) {
  for (;;) raw(231, (u64)code, 0, 0, 0, 0, 0); /* exit_group */
}

static void put_num(long v) {
  char b[32];
  int i = 31;
  int neg = v < 0;
  u64 u = neg ? (u64)(-v) : (u64)v;
  b[i--] = '\n';
  do {
    b[i--] = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  if (neg) b[i--] = '-';
  out(b + i + 1, 31 - i);
}

/* Decimal or 0x-hexadecimal, unsigned 64-bit; advances *p past the number. */
static u64 parse(const char **p) {
  const char *s = *p;
  u64 v = 0;
  if (s[0] == '0' && s[1] == 'x') {
    s += 2;
    for (;; s++) {
      char c = *s;
      if (c >= '0' && c <= '9') v = v * 16 + (u64)(c - '0');
      else if (c >= 'a' && c <= 'f') v = v * 16 + (u64)(c - 'a' + 10);
      else break;
    }
  } else {
    while (*s >= '0' && *s <= '9') v = v * 10 + (u64)(*s++ - '0');
  }
  *p = s;
  return v;
}

static void call(const char *spec) {
  const char *p = spec;
  while (*p && *p != '=') p++;
  long label_len = p - spec;
  if (*p != '=') bye(2);
  p++;
  u64 v[7] = {0, 0, 0, 0, 0, 0, 0};
  for (int i = 0; i < 7 && *p; i++) {
    v[i] = parse(&p);
    if (*p == ',') p++;
  }
  long ret = raw((long)v[0], v[1], v[2], v[3], v[4], v[5], v[6]);
  if (ret == 0 && label_len >= 5 && spec[0] == 'c' && spec[1] == 'l' && spec[2] == 'o' && spec[3] == 'n' &&
      spec[4] == 'e')
    bye(0);
  out(spec, label_len);
  out(" ", 1);
  put_num(ret);
}

void probe_main(long *sp) {
  int argc = (int)sp[0];
  char **argv = (char **)(sp + 1);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] == 'x' && a[1] == '3' && a[2] == '2' && !a[3]) {
      long r;
      __asm__ volatile("syscall" : "=a"(r) : "a"(0x40000000L + 39) : "rcx", "r11", "memory");
      out("x32 ", 4);
      put_num(r);
    } else if (a[0] == 'i' && a[1] == '3' && a[2] == '8' && a[3] == '6' && !a[4]) {
      long r;
      __asm__ volatile("int $0x80" : "=a"(r) : "a"(20) : "memory");
      out("i386 ", 5);
      put_num(r);
    } else {
      call(a);
    }
  }
  bye(0);
}

__asm__(".globl _start\n_start:\n mov %rsp, %rdi\n and $-16, %rsp\n call probe_main\n hlt\n");
