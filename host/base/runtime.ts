/** Which JavaScript runtime this is: some I/O paths differ between Node and Bun. */
export const IS_BUN = typeof (process.versions as Record<string, string | undefined>).bun === 'string';
