import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The bundle is package data: `saestudio serve` serves saestudio/web/ at "/".
export default defineConfig({
  plugins: [react()],
  build: { outDir: "../saestudio/web", emptyOutDir: true, chunkSizeWarningLimit: 600 },
  server: {
    proxy: { "/api": { target: "http://127.0.0.1:8000", ws: true } },
  },
  test: { environment: "node", include: ["src/**/*.test.ts"] },
});
